//! The gRPC front door for agents: enrollment and the long-lived session stream.
//!
//! A thin adapter: wire types are converted in `convert`, the work is done by the store, and
//! errors become `tonic::Status` through [`crate::error::Error`].

mod convert;

use std::pin::Pin;

use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use wbhealth_proto::v1::agent_message::Kind as AgentKind;
use wbhealth_proto::v1::agent_service_server::{AgentService, AgentServiceServer};
use wbhealth_proto::v1::server_message::Kind as ServerKind;
use wbhealth_proto::v1::{
    Ack, AgentConfig, AgentMessage, EnrollRequest, EnrollResponse, Rejected, ServerMessage,
};

use crate::AppState;
use crate::domain::{
    Agent, AgentId, AuditAction, IngestOutcome, NewAgent, NewAuditEvent, TokenRejection, secrets,
};
use crate::error::{Error, ErrorCode};
use crate::sessions::{EndReason, Registration};

/// The largest message an agent may send; a report of every check fits in a fraction of it.
const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// The tonic service, ready to add to a server.
pub fn service(state: AppState) -> AgentServiceServer<AgentGrpc> {
    AgentServiceServer::new(AgentGrpc { state }).max_decoding_message_size(MAX_MESSAGE_BYTES)
}

/// Implements `wbhealth.v1.AgentService`.
pub struct AgentGrpc {
    state: AppState,
}

type SessionStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<ServerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for AgentGrpc {
    async fn enroll(
        &self,
        request: Request<EnrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        let client_ip = request.remote_addr().map(|addr| addr.ip().to_string());
        let request = request.into_inner();
        if request.token.trim().is_empty() {
            return Err(Error::invalid("the enrollment token is empty; create one with POST /api/v1/tenants/{id}/enrollment-tokens").into());
        }
        let host = convert::host_facts(request.host)?;
        let credential_secret = secrets::generate("wbh_agent_");
        let id = AgentId::new();
        // Checked before the token is spent, so a wrong key costs the agent nothing.
        let client_certificate_pem = match &self.state.agent_ca {
            None => String::new(),
            Some(ca) => ca.issue(id, &request.client_public_key).ok_or_else(|| {
                Status::invalid_argument(
                    "this server requires mutual TLS: client_public_key must be an ECDSA P-256 public key (65-byte uncompressed point); update the agent",
                )
            })?,
        };
        let new = NewAgent {
            id,
            credential_hash: secrets::hash(&credential_secret),
            host,
        };
        let outcome = self
            .state
            .store
            .redeem_enrollment_token(
                &secrets::hash(request.token.trim()),
                OffsetDateTime::now_utc(),
                new,
            )
            .await
            .map_err(|e| Error::from_store(e, "enrollment token"))?;
        let agent = match outcome {
            Ok(agent) => agent,
            Err(rejection) => {
                tracing::warn!(reason = ?rejection, "enrollment refused");
                return Err(Status::unauthenticated(match rejection {
                    TokenRejection::Unknown => "the enrollment token is not valid",
                    TokenRejection::Expired => "the enrollment token has expired; create a new one",
                    TokenRejection::Exhausted => {
                        "the enrollment token has no uses left; create a new one"
                    }
                    TokenRejection::Revoked => "the enrollment token was revoked; create a new one",
                }));
            }
        };
        tracing::info!(agent_id = %agent.id, tenant_id = %agent.tenant_id, hostname = %agent.host.hostname, "agent enrolled");
        // The token's use is spent and the agent exists: failing the enrollment now would
        // strand it without its credential, so a lost audit event is logged instead.
        if let Err(e) = self
            .state
            .store
            .record_audit_event(NewAuditEvent {
                principal_id: agent.id.0,
                principal_name: format!("agent on {}", agent.host.hostname),
                action: AuditAction::AgentEnrolled,
                tenant_id: Some(agent.tenant_id),
                target_id: Some(agent.id.0),
                client_ip,
            })
            .await
        {
            tracing::error!(agent_id = %agent.id, error = %format!("{e:#}"), "audit event not recorded");
        }
        Ok(Response::new(EnrollResponse {
            agent_id: agent.id.to_string(),
            tenant_id: agent.tenant_id.to_string(),
            credential: format!("{}.{credential_secret}", agent.id),
            config: Some(self.agent_config()),
            client_certificate_pem,
        }))
    }

    type SessionStream = SessionStream;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<SessionStream>, Status> {
        let peer_certs = request.peer_certs();
        let (agent, mut credential_hash) = self.authenticate(request.metadata()).await?;
        if self.state.agent_ca.is_some() {
            // The TLS layer verified the certificate against the agent CA; it must also be
            // this agent's own, so a stolen credential or a stolen certificate alone is useless.
            let leaf = peer_certs
                .as_deref()
                .and_then(|certs| certs.first())
                .ok_or_else(|| {
                    Status::unauthenticated(
                        "this server requires mutual TLS: present the client certificate issued at enrollment (enroll the agent again if it has none)",
                    )
                })?;
            if !crate::agent_ca::certificate_names(leaf, agent.id) {
                tracing::warn!(agent_id = %agent.id, "client certificate of another agent presented");
                return Err(Status::unauthenticated(
                    "the client certificate was not issued to this agent",
                ));
            }
        }
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        tx.send(Ok(ServerMessage {
            kind: Some(ServerKind::Config(self.agent_config())),
        }))
        .await
        .map_err(|_| Status::cancelled("the agent went away"))?;
        let registration = self.state.sessions.register(agent.id, tx.clone());
        let state = self.state.clone();
        tracing::info!(agent_id = %agent.id, tenant_id = %agent.tenant_id, "agent connected");
        tokio::spawn(async move {
            loop {
                let received = tokio::select! {
                    received = inbound.message() => received,
                    reason = registration.ended() => {
                        let status = match reason {
                            EndReason::Revoked => revoked_status(),
                            EndReason::CredentialRetired => retired_status(),
                        };
                        tracing::info!(agent_id = %agent.id, ?reason, "closing an agent stream");
                        // An agent that stopped reading must not keep the stream open: past the
                        // wait, the stream ends without the status.
                        let _ = tokio::time::timeout(
                            std::time::Duration::from_secs(5),
                            tx.send(Err(status)),
                        )
                        .await;
                        break;
                    }
                };
                let message = match received {
                    Ok(Some(message)) => message,
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(agent_id = %agent.id, %status, "agent stream ended");
                        break;
                    }
                };
                match handle_message(&state, &agent, &mut credential_hash, &registration, message)
                    .await
                {
                    Ok(Some(reply)) => {
                        if tx.send(Ok(reply)).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => {}
                    Err(status) => {
                        tracing::warn!(agent_id = %agent.id, %status, "closing agent stream");
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                }
            }
            tracing::info!(agent_id = %agent.id, "agent disconnected");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

impl AgentGrpc {
    fn agent_config(&self) -> AgentConfig {
        AgentConfig {
            interval_seconds: self.state.config.agent_interval_seconds,
            enabled_checks: Vec::new(),
            passwordreset_endpoints: Vec::new(),
            servicebus_endpoints: Vec::new(),
        }
    }

    /// Finds the agent that `authorization: Bearer <agent id>.<secret>` names, and the hash of
    /// the credential it presented.
    async fn authenticate(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<(Agent, Vec<u8>), Status> {
        let unknown =
            || Status::unauthenticated("unknown agent credential; enroll the agent again");
        let header = metadata.get("authorization").ok_or_else(|| {
            Status::unauthenticated("missing authorization metadata: Bearer <agent credential>")
        })?;
        let credential = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Status::unauthenticated("authorization metadata must be: Bearer <agent credential>")
            })?;
        let (id, secret) = credential.split_once('.').ok_or_else(unknown)?;
        let id: AgentId = id.parse().map_err(|_| unknown())?;
        let stored = match self.state.store.agent_credential(id).await {
            Ok(stored) => stored,
            Err(crate::storage::StoreError::NotFound) => return Err(unknown()),
            Err(e) => return Err(Error::from_store(e, "agent").into()),
        };
        let current = secrets::verify(secret, &stored.credential_hash);
        let pending = !current
            && stored
                .pending_credential_hash
                .as_deref()
                .is_some_and(|hash| secrets::verify(secret, hash));
        if !(current || pending) {
            return Err(unknown());
        }
        if stored.agent.revoked_at.is_some() {
            return Err(revoked_status());
        }
        if pending {
            // The agent stored the new credential but its confirmation was lost: presenting
            // it is confirmation enough, and streams still open on the old one end.
            if complete_rotation(&self.state, &stored.agent, secret).await? {
                self.state
                    .sessions
                    .end_all(stored.agent.id, EndReason::CredentialRetired);
            }
            return Ok((stored.agent, secrets::hash(secret)));
        }
        if let Some(pending_hash) = &stored.pending_credential_hash {
            // A new stream on the current credential while a rotation waits: the agent never
            // stored the new one (it would log in with it), so the rotation is dropped and a new
            // one can start.
            let dropped = self
                .state
                .store
                .discard_pending_credential(stored.agent.id, pending_hash)
                .await
                .map_err(|e| Status::from(Error::from_store(e, "agent")))?;
            if dropped {
                tracing::info!(agent_id = %stored.agent.id, "unconfirmed credential rotation dropped: the agent logged in with its current credential");
            }
        }
        Ok((stored.agent, stored.credential_hash))
    }
}

/// What a revoked agent is told, on connecting and when its open stream is closed.
fn revoked_status() -> Status {
    Status::permission_denied(
        "this agent was revoked by an administrator; its credential is no longer accepted; enroll it again with a new token",
    )
}

/// What a stream that logged in with a retired credential is told when it is closed.
fn retired_status() -> Status {
    Status::unauthenticated(
        "the credential this connection logged in with was retired by a credential rotation; reconnect with the agent's current credential (if the agent never received a new one, its credential was copied: revoke the agent and enroll it again)",
    )
}

/// Ends the stream of an agent revoked since it connected, or whose stream logged in with a
/// credential that is no longer the current or pending one (rotated, perhaps on another
/// replica).
async fn ensure_still_valid(
    state: &AppState,
    agent: &Agent,
    credential_hash: &[u8],
) -> Result<(), Status> {
    let current = state
        .store
        .agent_credential(agent.id)
        .await
        .map_err(|e| Status::from(Error::from_store(e, "agent")))?;
    if current.agent.revoked_at.is_some() {
        return Err(revoked_status());
    }
    if current.credential_hash != credential_hash
        && current.pending_credential_hash.as_deref() != Some(credential_hash)
    {
        tracing::warn!(agent_id = %agent.id, "closing a stream that logged in with a retired credential");
        return Err(retired_status());
    }
    Ok(())
}

/// Makes the pending credential whose secret is `secret` the agent's only one, and records it.
/// Whether a rotation was completed.
async fn complete_rotation(state: &AppState, agent: &Agent, secret: &str) -> Result<bool, Status> {
    let done = state
        .store
        .complete_credential_rotation(agent.id, &secrets::hash(secret), OffsetDateTime::now_utc())
        .await
        .map_err(|e| Status::from(Error::from_store(e, "agent")))?;
    if !done {
        tracing::debug!(agent_id = %agent.id, "credential confirmation for no pending rotation");
        return Ok(false);
    }
    tracing::info!(agent_id = %agent.id, "agent credential rotated; the old one is refused from now on");
    if let Err(e) = state
        .store
        .record_audit_event(NewAuditEvent {
            principal_id: agent.id.0,
            principal_name: format!("agent on {}", agent.host.hostname),
            action: AuditAction::AgentCredentialRotated,
            tenant_id: Some(agent.tenant_id),
            target_id: Some(agent.id.0),
            client_ip: None,
        })
        .await
    {
        tracing::error!(agent_id = %agent.id, error = %format!("{e:#}"), "audit event not recorded");
    }
    Ok(true)
}

/// Acts on one message from an agent and says what to answer. An `Err` ends the stream.
async fn handle_message(
    state: &AppState,
    agent: &Agent,
    credential_hash: &mut Vec<u8>,
    registration: &Registration,
    message: AgentMessage,
) -> Result<Option<ServerMessage>, Status> {
    let now = OffsetDateTime::now_utc();
    let store_error = |e| Status::from(Error::from_store(e, "agent"));
    match message.kind {
        None => Err(Error::new(
            ErrorCode::InvalidRequest,
            "an agent message must carry hello, report or heartbeat",
        )
        .into()),
        Some(AgentKind::Hello(hello)) => {
            let host = convert::host_facts(hello.host)?;
            state
                .store
                .touch_agent(agent.id, now, Some(&host))
                .await
                .map_err(store_error)?;
            tracing::debug!(agent_id = %agent.id, spooled = hello.spooled_reports, "agent said hello");
            Ok(None)
        }
        Some(AgentKind::Heartbeat(_)) => {
            // A revocation or rotation made on another replica reaches this stream within a
            // heartbeat.
            ensure_still_valid(state, agent, credential_hash).await?;
            state.activity.agent_seen(agent.id, now);
            Ok(None)
        }
        Some(AgentKind::CredentialStored(stored)) => {
            let secret = stored
                .credential
                .split_once('.')
                .filter(|(id, _)| *id == agent.id.to_string())
                .map(|(_, secret)| secret)
                .ok_or_else(|| {
                    Status::invalid_argument(
                        "credential_stored must carry this agent's new credential",
                    )
                })?;
            if complete_rotation(state, agent, secret).await? {
                // This stream goes on with the new credential; any other logged in with the old.
                *credential_hash = secrets::hash(secret);
                let ended = registration.end_others();
                if ended > 0 {
                    tracing::warn!(agent_id = %agent.id, ended, "closed other streams of a rotated agent");
                }
            }
            Ok(None)
        }
        Some(AgentKind::Report(report)) => {
            let report_id = report.report_id.clone();
            // Another replica may have revoked the agent while this stream was open: nothing
            // from a revoked agent is stored.
            ensure_still_valid(state, agent, credential_hash).await?;
            state.activity.agent_seen(agent.id, now);
            let report = match convert::report(report, agent) {
                Ok(report) => report,
                Err(reason) => {
                    tracing::warn!(agent_id = %agent.id, %report_id, %reason, "rejected a malformed report");
                    return Ok(Some(ServerMessage {
                        kind: Some(ServerKind::Rejected(Rejected { report_id, reason })),
                    }));
                }
            };
            let outcome = state.ingest.submit(report).await.map_err(store_error)?;
            tracing::debug!(agent_id = %agent.id, %report_id, duplicate = (outcome == IngestOutcome::Duplicate), "report stored");
            Ok(Some(ServerMessage {
                kind: Some(ServerKind::Ack(Ack { report_id })),
            }))
        }
    }
}
