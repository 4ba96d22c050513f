#include "core/rpc.h"

#include <strings.h>

#include <cmath>
#include <cstring>
#include <map>
#include <random>

#include <grpc/grpc_security.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/impl/server_builder_option.h>
#include <grpcpp/impl/server_builder_plugin.h>
#include <grpcpp/impl/server_initializer.h>
#include <grpcpp/security/auth_metadata_processor.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <grpcpp/support/client_interceptor.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/file.h"
#include "core/grpc_status.h"
#include "core/logging.h"
#include "core/status.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace cohort {
namespace {

constexpr char kAuthorization[] = "authorization";
// AuthContext property set on calls that carried the admin token.
constexpr char kTokenRoleProperty[] = "cohort.token_role";

// ---------------------------------------------------------------------------
// Bearer token check, shared by the TLS and the plaintext path.

class TokenChecker {
 public:
  // `token` may be empty (no token required) when `admin_token` is set.
  TokenChecker(std::string token, std::string admin_token)
      : token_(std::move(token)), admin_token_(std::move(admin_token)) {}

  // `value` is the authorization header: "Bearer <token>" (the scheme is
  // case-insensitive). Compares in time independent of where they differ.
  bool Accepts(std::string_view value) const {
    return token_.empty() || Matches(value, token_) || IsAdmin(value);
  }
  bool IsAdmin(std::string_view value) const {
    return !admin_token_.empty() && Matches(value, admin_token_);
  }
  // A call without an authorization header.
  bool AcceptsNone() const { return token_.empty(); }

 private:
  static bool Matches(std::string_view value, const std::string& token) {
    constexpr std::string_view kScheme = "bearer ";
    if (value.size() < kScheme.size() ||
        strncasecmp(value.data(), kScheme.data(), kScheme.size()) != 0) {
      return false;
    }
    std::string_view presented = value.substr(kScheme.size());
    unsigned char diff = presented.size() == token.size() ? 0 : 1;
    for (size_t i = 0; i < token.size(); ++i) {
      diff |= static_cast<unsigned char>(token[i] ^ (i < presented.size() ? presented[i] : 0));
    }
    return diff == 0;
  }

 public:
  static constexpr char kError[] =
      "missing or invalid bearer token (send metadata \"authorization: Bearer <token>\" with "
      "the token of security.token_file)";

 private:
  const std::string token_;
  const std::string admin_token_;
};

// C++ processor for TLS credentials. Non-blocking: runs inline on the
// transport thread.
class TokenAuthProcessor : public grpc::AuthMetadataProcessor {
 public:
  explicit TokenAuthProcessor(std::shared_ptr<const TokenChecker> checker)
      : checker_(std::move(checker)) {}

  bool IsBlocking() const override { return false; }

  grpc::Status Process(const InputMetadata& auth_metadata, grpc::AuthContext* context,
                       OutputMetadata* consumed, OutputMetadata*) override {
    auto it = auth_metadata.find(kAuthorization);
    if (it == auth_metadata.end() && checker_->AcceptsNone()) return grpc::Status::OK;
    std::string_view value = it == auth_metadata.end()
                                 ? std::string_view()
                                 : std::string_view(it->second.data(), it->second.size());
    if (it != auth_metadata.end() && checker_->Accepts(value)) {
      if (checker_->IsAdmin(value)) context->AddProperty(kTokenRoleProperty, "admin");
      consumed->insert({kAuthorization, std::string(value)});
      return grpc::Status::OK;
    }
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, TokenChecker::kError);
  }

 private:
  std::shared_ptr<const TokenChecker> checker_;
};

// Plaintext credentials that still run an auth metadata processor.
// grpc::InsecureServerCredentials() refuses processors, but the core's
// insecure credentials accept one through the C API, and its server auth
// filter then checks every call the same way as on TLS.
class PlaintextTokenServerCredentials final : public grpc::ServerCredentials {
 public:
  // `checker` must outlive the server (RpcServer keeps it).
  explicit PlaintextTokenServerCredentials(const TokenChecker* checker) : checker_(checker) {}

  void SetAuthMetadataProcessor(const std::shared_ptr<grpc::AuthMetadataProcessor>&) override {
    COHORT_CHECK(false) << "PlaintextTokenServerCredentials has its own processor";
  }

 private:
  int AddPortToServer(const std::string& addr, grpc_server* server) override {
    grpc_server_credentials* creds = grpc_insecure_server_credentials_create();
    grpc_auth_metadata_processor processor;
    processor.process = &Process;
    processor.destroy = nullptr;
    processor.state = const_cast<TokenChecker*>(checker_);
    grpc_server_credentials_set_auth_metadata_processor(creds, processor);
    int port = grpc_server_add_http2_port(server, addr.c_str(), creds);
    grpc_server_credentials_release(creds);
    return port;
  }

  static void Process(void* state, grpc_auth_context* context, const grpc_metadata* md,
                      size_t num_md, grpc_process_auth_metadata_done_cb cb, void* user_data) {
    const auto* checker = static_cast<const TokenChecker*>(state);
    bool found = false;
    for (size_t i = 0; i < num_md; ++i) {
      std::string_view key(reinterpret_cast<const char*>(GRPC_SLICE_START_PTR(md[i].key)),
                           GRPC_SLICE_LENGTH(md[i].key));
      if (key != kAuthorization) continue;
      found = true;
      std::string_view value(reinterpret_cast<const char*>(GRPC_SLICE_START_PTR(md[i].value)),
                             GRPC_SLICE_LENGTH(md[i].value));
      if (checker->Accepts(value)) {
        if (checker->IsAdmin(value)) {
          grpc_auth_context_add_cstring_property(context, kTokenRoleProperty, "admin");
        }
        cb(user_data, &md[i], 1, nullptr, 0, GRPC_STATUS_OK, nullptr);
        return;
      }
      break;
    }
    if (!found && checker->AcceptsNone()) {
      cb(user_data, nullptr, 0, nullptr, 0, GRPC_STATUS_OK, nullptr);
      return;
    }
    cb(user_data, nullptr, 0, nullptr, 0, GRPC_STATUS_UNAUTHENTICATED, TokenChecker::kError);
  }

  const TokenChecker* checker_;
};

// Adds "authorization: Bearer <token>" to every call of a channel.
class TokenInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit TokenInterceptor(const std::string* header) : header_(header) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->insert({kAuthorization, *header_});
    }
    methods->Proceed();
  }

 private:
  const std::string* header_;
};

class TokenInterceptorFactory : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit TokenInterceptorFactory(const std::string& token) : header_("Bearer " + token) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo*) override {
    return new TokenInterceptor(&header_);
  }

 private:
  const std::string header_;  // lives as long as the channel
};

// ---------------------------------------------------------------------------
// Captures the names of the services a server serves (the health service
// needs them), through the builder plugin hook that sees the server.

class ServiceNamesPlugin : public grpc::ServerBuilderPlugin {
 public:
  explicit ServiceNamesPlugin(std::vector<std::string>* out) : out_(out) {}
  std::string name() override { return "cohort_service_names"; }
  void InitServer(grpc::ServerInitializer*) override {}
  void Finish(grpc::ServerInitializer* si) override { *out_ = *si->GetServiceList(); }
  void ChangeArguments(const std::string&, void*) override {}

 private:
  std::vector<std::string>* out_;
};

class ServiceNamesOption : public grpc::ServerBuilderOption {
 public:
  explicit ServiceNamesOption(std::vector<std::string>* out) : out_(out) {}
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    plugins->push_back(std::make_unique<ServiceNamesPlugin>(out_));
  }

 private:
  std::vector<std::string>* out_;
};

// ---------------------------------------------------------------------------
// TLS files.

// Checks that `path` (named `what` in errors) is readable and holds PEM.
absl::Status CheckPemFile(const std::string& path, const std::string& what) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", text.status().message()));
  }
  if (text->find("-----BEGIN ") == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " \"", path, "\": not a PEM file (no -----BEGIN line)"));
  }
  return absl::OkStatus();
}

absl::Status CheckTls(const TlsConfig& tls, bool server) {
  if (tls.refresh_seconds < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("tls refresh_seconds: expected >= 1, got ", tls.refresh_seconds));
  }
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    return absl::InvalidArgumentError("tls: cert_file and key_file must be set together");
  }
  if (server && tls.cert_file.empty()) {
    return absl::InvalidArgumentError(
        "tls: a server needs cert_file and key_file (ca_file alone only verifies peers)");
  }
  if (server && tls.require_client_cert && tls.ca_file.empty()) {
    return absl::InvalidArgumentError(
        "tls: require_client_cert needs ca_file (the CA that signs client certificates)");
  }
  if (!tls.cert_file.empty()) RETURN_IF_ERROR(CheckPemFile(tls.cert_file, "tls cert_file"));
  if (!tls.key_file.empty()) RETURN_IF_ERROR(CheckPemFile(tls.key_file, "tls key_file"));
  if (!tls.ca_file.empty()) RETURN_IF_ERROR(CheckPemFile(tls.ca_file, "tls ca_file"));
  return absl::OkStatus();
}

std::shared_ptr<grpc::experimental::FileWatcherCertificateProvider> MakeProvider(
    const TlsConfig& tls) {
  return std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      tls.key_file, tls.cert_file, tls.ca_file, static_cast<unsigned>(tls.refresh_seconds));
}

std::string JoinHostPort(const std::string& host, int port) {
  if (host.find(':') != std::string::npos && host.front() != '[') {
    return absl::StrCat("[", host, "]:", port);  // IPv6
  }
  return absl::StrCat(host, ":", port);
}

}  // namespace

// ---------------------------------------------------------------------------
// RpcServer

absl::StatusOr<std::unique_ptr<RpcServer>> RpcServer::Start(
    const ServerOptions& options, const std::vector<grpc::Service*>& services) {
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("port: expected 0..65535, got ", options.port));
  }
  if (options.host.empty()) return absl::InvalidArgumentError("host: expected a host or IP");
  if (options.tls.enabled()) RETURN_IF_ERROR(CheckTls(options.tls, /*server=*/true));

  // Process-wide switches; both only affect servers built after them.
  static const bool initialized = [] {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
    return true;
  }();
  (void)initialized;

  std::unique_ptr<RpcServer> rpc(new RpcServer());
  rpc->host_ = options.host;

  std::shared_ptr<const TokenChecker> checker;
  if (!options.bearer_token.empty() || !options.admin_token.empty()) {
    checker = std::make_shared<TokenChecker>(options.bearer_token, options.admin_token);
    rpc->keep_alive_ = checker;
  }
  std::shared_ptr<grpc::ServerCredentials> creds;
  if (options.tls.enabled()) {
    grpc::experimental::TlsServerCredentialsOptions tls_options(MakeProvider(options.tls));
    tls_options.watch_identity_key_cert_pairs();
    if (!options.tls.ca_file.empty()) tls_options.watch_root_certs();
    tls_options.set_cert_request_type(
        options.tls.require_client_cert ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
        : options.tls.ca_file.empty()   ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                        : GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
    creds = grpc::experimental::TlsServerCredentials(tls_options);
    if (checker) creds->SetAuthMetadataProcessor(std::make_shared<TokenAuthProcessor>(checker));
  } else if (checker) {
    creds = std::make_shared<PlaintextTokenServerCredentials>(checker.get());
  } else {
    creds = grpc::InsecureServerCredentials();
  }

  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(JoinHostPort(options.host, options.port), creds, &bound_port);
  for (grpc::Service* service : services) builder.RegisterService(service);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  builder.SetOption(std::make_unique<ServiceNamesOption>(&rpc->names_));
  // gRPC sets SO_REUSEPORT by default, which lets a second server bind a
  // port in use and silently share its traffic.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  rpc->server_ = builder.BuildAndStart();
  if (!rpc->server_ || bound_port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ",
                                               JoinHostPort(options.host, options.port),
                                               " (port in use, or not a local address?)"));
  }
  rpc->port_ = bound_port;
  rpc->SetServing(options.serving_at_start);
  return rpc;
}

RpcServer::~RpcServer() {
  if (server_ != nullptr) Shutdown(absl::Seconds(5));
}

std::string RpcServer::address() const { return JoinHostPort(host_, port_); }

void RpcServer::SetServing(bool serving) {
  absl::MutexLock lock(&mu_);
  if (shut_down_) return;
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  if (health == nullptr) return;
  health->SetServingStatus(serving);  // "" and every status set before
  for (const std::string& name : names_) health->SetServingStatus(name, serving);
}

void RpcServer::Shutdown(absl::Duration deadline) {
  // A second caller waits here until the first has finished.
  absl::MutexLock order(&shutdown_mu_);
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
    if (grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService()) {
      health->Shutdown();  // NOT_SERVING for all, and stays so
    }
  }
  // Not under mu_: running handlers may still call SetServing.
  server_->Shutdown(absl::ToChronoTime(absl::Now() + deadline));
}

void RpcServer::Wait() { server_->Wait(); }

// ---------------------------------------------------------------------------
// Channels

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const std::string& target,
                                                           const ChannelOptions& options) {
  if (target.empty()) return absl::InvalidArgumentError("channel target: expected host:port");
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  if (!options.lb_policy.empty()) args.SetLoadBalancingPolicyName(options.lb_policy);
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (options.tls.enabled()) {
    RETURN_IF_ERROR(CheckTls(options.tls, /*server=*/false));
    grpc::experimental::TlsChannelCredentialsOptions tls_options;
    tls_options.set_certificate_provider(MakeProvider(options.tls));
    if (!options.tls.ca_file.empty()) tls_options.watch_root_certs();  // else system roots
    if (!options.tls.cert_file.empty()) tls_options.watch_identity_key_cert_pairs();
    creds = grpc::experimental::TlsCredentials(tls_options);
    if (!options.tls_server_name_override.empty()) {
      args.SetSslTargetNameOverride(options.tls_server_name_override);
    }
  } else {
    creds = grpc::InsecureChannelCredentials();
  }
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> interceptors;
  if (!options.bearer_token.empty()) {
    interceptors.push_back(std::make_unique<TokenInterceptorFactory>(options.bearer_token));
  }
  return grpc::experimental::CreateCustomChannelWithInterceptors(target, creds, args,
                                                                 std::move(interceptors));
}

absl::Status CheckHealth(const std::shared_ptr<grpc::Channel>& channel, const std::string& service,
                         absl::Duration timeout) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) return Annotate(FromGrpcStatus(status), "health check");
  if (response.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
    return absl::UnavailableError(
        absl::StrCat("health check: service \"", service, "\" is ",
                     grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status())));
  }
  return absl::OkStatus();
}

absl::Status WaitForServing(const std::shared_ptr<grpc::Channel>& channel, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::Duration pause = absl::Milliseconds(20);
  absl::Status last;
  while (true) {
    absl::Duration left = deadline - absl::Now();
    last =
        CheckHealth(channel, "", std::min(std::max(left, absl::Milliseconds(1)), absl::Seconds(2)));
    if (last.ok()) return last;
    // A wrong token or a missing method does not fix itself by waiting.
    if (absl::IsUnauthenticated(last) || absl::IsPermissionDenied(last) ||
        absl::IsUnimplemented(last)) {
      return last;
    }
    left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) break;
    absl::SleepFor(std::min(pause, left));
    pause = std::min(pause * 2, absl::Milliseconds(500));
  }
  return absl::DeadlineExceededError(absl::StrCat(
      "not SERVING within ", absl::FormatDuration(timeout), "; last: ", last.message()));
}

// ---------------------------------------------------------------------------
// Retry

absl::Duration BackoffDelay(const RetryPolicy& policy, int retry) {
  double scale = std::pow(policy.multiplier, std::max(0, retry - 1));
  absl::Duration d = policy.initial_backoff * scale;
  return std::min(d, policy.max_backoff);
}

absl::Status CallWithRetry(const RetryPolicy& policy, const std::function<grpc::Status()>& call) {
  thread_local std::mt19937_64 rng(std::random_device{}());
  const int attempts = std::max(1, policy.max_attempts);
  grpc::Status status;
  for (int attempt = 1; attempt <= attempts; ++attempt) {
    status = call();
    if (status.error_code() != grpc::StatusCode::UNAVAILABLE) return FromGrpcStatus(status);
    if (attempt == attempts) break;
    double jitter = std::clamp(policy.jitter, 0.0, 1.0);
    std::uniform_real_distribution<double> factor(1.0 - jitter, 1.0 + jitter);
    absl::SleepFor(BackoffDelay(policy, attempt) * factor(rng));
  }
  return absl::UnavailableError(
      absl::StrCat(status.error_message(), " (gave up after ", attempts, " attempts)"));
}

// ---------------------------------------------------------------------------
// Config helpers

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("token file: ", text.status().message()));
  }
  std::string token(absl::StripAsciiWhitespace(*text));
  if (token.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("token file \"", path, "\": empty"));
  }
  for (char c : token) {
    if (c < 0x21 || c > 0x7e) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token file \"", path,
          "\": the token must be printable ASCII without spaces (it travels in a header)"));
    }
  }
  return token;
}

namespace {
TlsConfig TlsFromConfig(const TlsSection& tls) {
  TlsConfig out;
  out.cert_file = tls.cert_file;
  out.key_file = tls.key_file;
  out.ca_file = tls.ca_file;
  out.require_client_cert = tls.require_client_cert;
  return out;
}
}  // namespace

absl::StatusOr<ServerOptions> ServerOptionsFromConfig(const SecuritySection& security,
                                                      const std::string& host, int port) {
  ServerOptions options;
  options.host = host;
  options.port = port;
  options.tls = TlsFromConfig(security.tls);
  if (!security.token_file.empty()) {
    ASSIGN_OR_RETURN(options.bearer_token, ReadTokenFile(security.token_file));
  }
  if (!security.admin_token_file.empty()) {
    ASSIGN_OR_RETURN(options.admin_token, ReadTokenFile(security.admin_token_file));
  }
  return options;
}

bool CallHasAdminToken(const grpc::ServerContext& context) {
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth == nullptr) return false;
  for (const grpc::string_ref& v : auth->FindPropertyValues(kTokenRoleProperty)) {
    if (std::string_view(v.data(), v.size()) == "admin") return true;
  }
  return false;
}

absl::StatusOr<ChannelOptions> ChannelOptionsFromConfig(const SecuritySection& security) {
  ChannelOptions options;
  options.tls = TlsFromConfig(security.tls);
  options.tls.require_client_cert = false;  // a server-side setting
  if (!security.token_file.empty()) {
    ASSIGN_OR_RETURN(options.bearer_token, ReadTokenFile(security.token_file));
  }
  return options;
}

}  // namespace cohort
