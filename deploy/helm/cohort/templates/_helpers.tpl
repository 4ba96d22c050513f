{{/* Names ------------------------------------------------------------------ */}}
{{- define "cohort.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "cohort.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: cohort
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: include "cohort.selector" (list . "learner") */}}
{{- define "cohort.selector" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: cohort
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "cohort.serviceAccountName" -}}
{{- default (include "cohort.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "cohort.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- define "cohort.rewardImage" -}}
{{- $r := .Values.reward.image -}}
{{- if $r.repository -}}
{{- printf "%s:%s" $r.repository (default (default .Chart.AppVersion .Values.image.tag) $r.tag) -}}
{{- else -}}
{{- include "cohort.image" . -}}
{{- end -}}
{{- end -}}

{{- define "cohort.learnerHost" -}}
{{- printf "%s-learner.%s.svc" (include "cohort.fullname" .) .Release.Namespace -}}
{{- end -}}
{{- define "cohort.rewardHost" -}}
{{- printf "%s-reward.%s.svc" (include "cohort.fullname" .) .Release.Namespace -}}
{{- end -}}

{{- define "cohort.tokenSecret" -}}
{{- default (printf "%s-token" (include "cohort.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}
{{- define "cohort.tlsSecret" -}}
{{- default (printf "%s-tls" (include "cohort.fullname" .)) .Values.tls.existingSecret -}}
{{- end -}}

{{/* "true" when a task is scored by the code verifier: an explicit
     verifier: code, a task named code without a verifier, or no `tasks` key
     (cohort's default tasks include code). */}}
{{- define "cohort.codeSandbox" -}}
{{- $reward := default dict (get (default dict .Values.config) "reward") -}}
{{- if not (hasKey $reward "tasks") -}}
true
{{- else -}}
{{- $code := false -}}
{{- range $name, $task := (default dict $reward.tasks) -}}
{{- $verifier := get (default dict $task) "verifier" | default "" -}}
{{- if or (eq $verifier "code") (and (eq $name "code") (eq $verifier "")) -}}
{{- $code = true -}}
{{- end -}}
{{- end -}}
{{- if $code }}true{{ end -}}
{{- end -}}
{{- end -}}

{{/* The run config: the user's `config`, then what the chart owns. */}}
{{- define "cohort.runConfig" -}}
{{- $v := .Values -}}
{{- $security := dict -}}
{{- if $v.auth.enabled -}}
{{- $_ := set $security "token_file" "/etc/cohort/token/token" -}}
{{- $_ := set $security "admin_token_file" "/etc/cohort/token/admin-token" -}}
{{- end -}}
{{- if $v.tls.enabled -}}
{{- $_ := set $security "tls" (dict "cert_file" "/etc/cohort/tls/tls.crt" "key_file" "/etc/cohort/tls/tls.key" "ca_file" "/etc/cohort/tls/ca.crt" "require_client_cert" $v.tls.requireClientCert) -}}
{{- end -}}
{{- $owned := dict
  "run" (dict "out_dir" "/var/lib/cohort")
  "learner" (dict "host" "0.0.0.0" "port" $v.ports.learner "metrics_port" $v.ports.metrics "checkpoint_on_stop_seconds" $v.learner.checkpointDeadlineSeconds "device" (ternary "cuda" "cpu" (gt (int $v.learner.gpu) 0)))
  "actor" (dict "metrics_port" $v.ports.metrics "drain_grace_seconds" $v.actor.drainGraceSeconds "device" (ternary "cuda" "cpu" (gt (int $v.actor.gpu) 0)))
  "reward" (dict "host" "0.0.0.0" "port" $v.ports.reward "metrics_port" $v.ports.metrics "address" (printf "%s:%v" (include "cohort.rewardHost" .) $v.ports.reward))
  "weights" (dict "transport" $v.weights.transport)
  "supervisor" (dict "stop_timeout_seconds" (include "cohort.stopTimeout" . | int))
-}}
{{- if $security -}}
{{- $_ := set $owned "security" $security -}}
{{- end -}}
{{- $merged := mustMergeOverwrite (deepCopy (default dict $v.config)) $owned -}}
{{- toYaml $merged -}}
{{- end -}}

{{/* supervisor.stop_timeout_seconds: every process's SIGTERM-to-exit
     deadline. It must exceed actor.drain_grace_seconds (the drain happens
     inside it), so it is the drain plus stopTimeoutSeconds. */}}
{{- define "cohort.stopTimeout" -}}
{{- add .Values.actor.drainGraceSeconds .Values.stopTimeoutSeconds -}}
{{- end -}}

{{/* terminationGracePeriodSeconds: include "cohort.grace" (list . extraDeadline preStopSleep):
     preStop + the role's own extra deadline (the learner's checkpoint) +
     the stop deadline + a margin. */}}
{{- define "cohort.grace" -}}
{{- $root := index . 0 -}}
{{- add (index . 1) (index . 2) (include "cohort.stopTimeout" $root | int) $root.Values.terminationMarginSeconds -}}
{{- end -}}

{{/* The restricted Pod Security profile, pod level. */}}
{{- define "cohort.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurityContext.runAsUser }}
runAsGroup: {{ .Values.podSecurityContext.runAsGroup }}
fsGroup: {{ .Values.podSecurityContext.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The restricted Pod Security profile, container level. */}}
{{- define "cohort.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "cohort.volumes" -}}
- name: config
  configMap:
    name: {{ include "cohort.fullname" . }}-config
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
{{- if .Values.auth.enabled }}
- name: token
  secret:
    secretName: {{ include "cohort.tokenSecret" . }}
    defaultMode: 0440
{{- end }}
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ include "cohort.tlsSecret" . }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{- define "cohort.volumeMounts" -}}
- name: config
  mountPath: /etc/cohort/run.yaml
  subPath: run.yaml
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if .Values.auth.enabled }}
- name: token
  mountPath: /etc/cohort/token
  readOnly: true
{{- end }}
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: /etc/cohort/tls
  readOnly: true
{{- end }}
{{- end -}}

{{/* Probes: include "cohort.probes" (list . grpcPort) */}}
{{- define "cohort.probes" -}}
{{- $root := index . 0 -}}
{{- $p := $root.Values.probes -}}
readinessProbe:
  exec:
    command:
      - cohort
      - health
      - {{ printf "localhost:%v" (index . 1) | quote }}
      - --config=/etc/cohort/run.yaml
      - --quiet
      - {{ printf "--timeout_seconds=%v" (sub $p.readiness.timeoutSeconds 1) | quote }}
      {{- if and $root.Values.tls.enabled $root.Values.tls.probeServerName }}
      - {{ printf "--tls_server_name=%s" $root.Values.tls.probeServerName | quote }}
      {{- end }}
  periodSeconds: {{ $p.readiness.periodSeconds }}
  timeoutSeconds: {{ $p.readiness.timeoutSeconds }}
  failureThreshold: {{ $p.readiness.failureThreshold }}
livenessProbe:
  httpGet:
    path: /healthz
    port: metrics
  periodSeconds: {{ $p.liveness.periodSeconds }}
  timeoutSeconds: {{ $p.liveness.timeoutSeconds }}
  failureThreshold: {{ $p.liveness.failureThreshold }}
startupProbe:
  httpGet:
    path: /healthz
    port: metrics
  periodSeconds: {{ $p.startup.periodSeconds }}
  failureThreshold: {{ $p.startup.failureThreshold }}
{{- end -}}

{{/* preStop: include "cohort.preStop" seconds */}}
{{- define "cohort.preStop" -}}
{{- if gt (int .) 0 }}
lifecycle:
  preStop:
    exec:
      command: ["sleep", {{ . | quote }}]
{{- end }}
{{- end -}}

{{- define "cohort.ncclEnv" -}}
{{- if eq .Values.weights.transport "nccl" }}
- name: NCCL_SOCKET_IFNAME
  value: {{ .Values.nccl.socketIfname | quote }}
- name: NCCL_IB_DISABLE
  value: {{ ternary "1" "0" .Values.nccl.ibDisable | quote }}
- name: NCCL_DEBUG
  value: {{ .Values.nccl.debug | quote }}
{{- range $k, $val := .Values.nccl.env }}
- name: {{ $k }}
  value: {{ $val | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "cohort.commonEnv" -}}
- name: HOME
  value: /tmp
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end -}}

{{/* Cross-field checks that values.schema.json cannot express. */}}
{{- define "cohort.validate" -}}
{{- $v := .Values -}}
{{- if and $v.tls.enabled (not $v.tls.existingSecret) (not $v.tls.generate) -}}
{{- fail "tls.enabled=true needs tls.existingSecret (a Secret with tls.crt, tls.key, ca.crt) or tls.generate=true" -}}
{{- end -}}
{{- if and $v.reward.autoscaling.enabled (gt (int $v.reward.autoscaling.minReplicas) (int $v.reward.autoscaling.maxReplicas)) -}}
{{- fail (printf "reward.autoscaling: minReplicas (%v) is above maxReplicas (%v)" $v.reward.autoscaling.minReplicas $v.reward.autoscaling.maxReplicas) -}}
{{- end -}}
{{- if and (eq $v.weights.transport "nccl") (lt (int $v.actor.gpu) 1) -}}
{{- fail "weights.transport=nccl needs GPU actors: set actor.gpu >= 1 (or weights.transport=grpc)" -}}
{{- end -}}
{{- if and (eq $v.weights.transport "nccl") (lt (int $v.learner.gpu) 1) -}}
{{- fail "weights.transport=nccl broadcasts from the learner's GPU: set learner.gpu >= 1 (or weights.transport=grpc)" -}}
{{- end -}}
{{- if and $v.tls.enabled (not $v.tls.requireClientCert) (not $v.auth.enabled) -}}
{{- fail "tls.requireClientCert=false with auth.enabled=false lets any pod call the learner: enable one of them" -}}
{{- end -}}
{{- end -}}
