#!/usr/bin/env node
// Validates rendered Kubernetes manifests (the output of `helm template`):
//   1. every object against the Kubernetes OpenAPI schemas
//      (kubernetes-models; monitoring.coreos.com from
//      @kubernetes-models/prometheus-operator); an unknown apiVersion/kind
//      is an error;
//   2. every pod template against the restricted Pod Security profile
//      (non-root, no privilege escalation, all capabilities dropped, seccomp
//      RuntimeDefault or Localhost, read-only root file system, no host
//      namespaces, allowed volume types). The only exception allowed: the
//      reward server's code sandbox (hostUsers: false, procMount: Unmasked,
//      a Localhost/Unconfined seccomp or AppArmor profile), and only with
//      --allow-sandbox;
//   3. cohort's own rules: each container has a readiness exec probe running
//      `cohort health`, a liveness probe on /healthz, and the ConfigMap holds
//      run.yaml.
// Usage: node validate.js [--allow-sandbox] [--expect-kind Kind ...] FILE...
// Prints one line per object and exits 1 with every problem listed.
'use strict';

const fs = require('fs');
const yaml = require('js-yaml');

const args = process.argv.slice(2);
let allowSandbox = false;
const expectKinds = [];
const files = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--allow-sandbox') allowSandbox = true;
  else if (args[i] === '--expect-kind') expectKinds.push(args[++i]);
  else files.push(args[i]);
}
if (files.length === 0) {
  console.error('usage: validate.js [--allow-sandbox] [--expect-kind Kind ...] FILE...');
  process.exit(2);
}

function modelFor(apiVersion, kind) {
  let mod;
  if (apiVersion.startsWith('monitoring.coreos.com/')) {
    mod = `@kubernetes-models/prometheus-operator/${apiVersion}`;
  } else {
    mod = `kubernetes-models/${apiVersion}`;
  }
  let exports;
  try {
    exports = require(mod);
  } catch (e) {
    return null;
  }
  return exports[kind] || null;
}

const problems = [];
const seenKinds = new Set();
let sandboxPods = 0;

const ALLOWED_VOLUMES = new Set([
  'configMap', 'csi', 'downwardAPI', 'emptyDir', 'ephemeral', 'persistentVolumeClaim',
  'projected', 'secret',
]);

function checkPodSecurity(where, spec, isReward) {
  const sandboxFields = [];
  const bad = (msg) => problems.push(`${where}: ${msg}`);
  for (const f of ['hostNetwork', 'hostPID', 'hostIPC']) {
    if (spec[f]) bad(`${f}: true is not allowed by the restricted profile`);
  }
  if (spec.hostUsers === false) sandboxFields.push('hostUsers: false');
  const psc = spec.securityContext || {};
  for (const v of spec.volumes || []) {
    const type = Object.keys(v).find((k) => k !== 'name');
    if (!ALLOWED_VOLUMES.has(type)) bad(`volume ${v.name}: type ${type} is not allowed`);
  }
  const seccompOk = (p) => p && (p.type === 'RuntimeDefault' || p.type === 'Localhost');
  for (const c of [...(spec.initContainers || []), ...(spec.containers || [])]) {
    const sc = c.securityContext || {};
    const cw = `${where} container ${c.name}`;
    const runAsNonRoot = sc.runAsNonRoot ?? psc.runAsNonRoot;
    if (runAsNonRoot !== true) problems.push(`${cw}: runAsNonRoot must be true`);
    const uid = sc.runAsUser ?? psc.runAsUser;
    if (uid === 0) problems.push(`${cw}: runAsUser 0`);
    if (sc.allowPrivilegeEscalation !== false) {
      problems.push(`${cw}: allowPrivilegeEscalation must be false`);
    }
    if (sc.privileged) problems.push(`${cw}: privileged`);
    const drop = (sc.capabilities && sc.capabilities.drop) || [];
    if (!drop.includes('ALL')) problems.push(`${cw}: capabilities.drop must include ALL`);
    const add = (sc.capabilities && sc.capabilities.add) || [];
    if (add.length) problems.push(`${cw}: capabilities.add ${add.join(',')}`);
    if (sc.readOnlyRootFilesystem !== true) {
      problems.push(`${cw}: readOnlyRootFilesystem must be true`);
    }
    const seccomp = sc.seccompProfile || psc.seccompProfile;
    if (!seccompOk(seccomp)) {
      if (seccomp && seccomp.type === 'Unconfined') sandboxFields.push('seccomp Unconfined');
      else problems.push(`${cw}: seccompProfile must be RuntimeDefault or Localhost`);
    } else if (seccomp.type === 'Localhost') {
      sandboxFields.push(`seccomp Localhost ${seccomp.localhostProfile}`);
    }
    if (sc.procMount && sc.procMount !== 'Default') sandboxFields.push(`procMount ${sc.procMount}`);
    if (sc.appArmorProfile && sc.appArmorProfile.type === 'Unconfined') {
      sandboxFields.push('AppArmor Unconfined');
    }
    // cohort's probes.
    const rp = c.readinessProbe;
    const cmd = rp && rp.exec && rp.exec.command;
    if (!cmd || cmd[0] !== 'cohort' || cmd[1] !== 'health') {
      problems.push(`${cw}: readinessProbe must exec \`cohort health ADDRESS\``);
    }
    const lp = c.livenessProbe;
    if (!lp || !lp.httpGet || lp.httpGet.path !== '/healthz') {
      problems.push(`${cw}: livenessProbe must GET /healthz`);
    }
  }
  if (sandboxFields.length) {
    if (!isReward) {
      problems.push(`${where}: only code-sandbox reward pods may have ${sandboxFields.join(', ')}`);
    } else if (!allowSandbox) {
      problems.push(`${where}: ${sandboxFields.join(', ')} without a code task (--allow-sandbox)`);
    } else {
      sandboxPods++;
    }
  }
}

for (const file of files) {
  const docs = yaml.loadAll(fs.readFileSync(file, 'utf8')).filter((d) => d);
  for (const doc of docs) {
    const name = (doc.metadata && doc.metadata.name) || '?';
    const where = `${file}: ${doc.kind}/${name}`;
    if (!doc.apiVersion || !doc.kind) {
      problems.push(`${where}: no apiVersion or kind`);
      continue;
    }
    seenKinds.add(doc.kind);
    const Model = modelFor(doc.apiVersion, doc.kind);
    if (!Model) {
      problems.push(`${where}: no schema for ${doc.apiVersion} ${doc.kind}`);
      continue;
    }
    try {
      new Model(doc).validate();
    } catch (e) {
      problems.push(`${where}: ${e.message}`);
    }
    const template = doc.spec && doc.spec.template && doc.spec.template.spec;
    if (template && ['Deployment', 'StatefulSet', 'DaemonSet', 'Job'].includes(doc.kind)) {
      const component = doc.spec.template.metadata.labels['app.kubernetes.io/component'];
      checkPodSecurity(where, template, component === 'reward');
    }
    if (doc.kind === 'ConfigMap' && !(doc.data && doc.data['run.yaml'])) {
      problems.push(`${where}: no run.yaml`);
    }
    console.log(`ok ${doc.apiVersion} ${doc.kind}/${name}`);
  }
}
for (const kind of expectKinds) {
  if (!seenKinds.has(kind)) problems.push(`no ${kind} rendered`);
}
if (allowSandbox && sandboxPods === 0) {
  problems.push('--allow-sandbox given but no reward pod has the code-sandbox settings');
}
if (problems.length) {
  for (const p of problems) console.error(`FAIL ${p}`);
  process.exit(1);
}
