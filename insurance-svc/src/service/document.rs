//! `medins.insurance.v1.DocumentService`: uploads streamed in chunks, metadata reads, streamed
//! downloads, and commitment letters rendered from the owner's signature.
//!
//! An upload is held in memory (8 MiB at most) until the client closes the stream and every
//! check passed; only then are the bytes written to the object store, then the row inserted. A
//! stream that breaks off therefore stores nothing, and a row always names complete bytes.

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, stream::BoxStream};
use medins_common::{
    ApiError, ApiResult, Reason,
    auth::Caller,
    convert::timestamp,
    error::{require_enum, require_uuid},
    mask::mask_name,
    token::PersonClaims,
};
use medins_proto::insurance::v1::{
    self as pb, DownloadDocumentRequest, DownloadDocumentResponse, GenerateCommitmentLetterRequest,
    GenerateCommitmentLetterResponse, GetDocumentRequest, GetDocumentResponse, UploadDocumentRequest,
    UploadDocumentResponse, document_service_server::DocumentService, download_document_response,
    upload_document_request,
};
use sha2::Digest;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;

use super::SharedState;
use crate::{
    domain::{
        document::{
            ContentType, DocumentKind, UploadBuffer, check_content, declared_sha256, declared_size, object_key,
            sha256_hex,
        },
        family::Relationship,
        image::pdf_image,
        letter::{CommitmentLetter, render, require_member_name},
    },
    store::document::Document,
};

/// Largest chunk of a download (well under the default 64 KiB message limit).
pub const DOWNLOAD_CHUNK_BYTES: usize = 32 * 1024;

/// `uploaded_by` of documents medins renders itself.
pub const RENDERED_BY: &str = "medins";

/// How many bytes of uploads this process holds in memory at once, in KiB (256 MiB): an upload
/// waits for its declared size to fit (within the request timeout), so many concurrent 8 MiB
/// uploads cannot exhaust memory.
pub const UPLOAD_MEMORY_BUDGET_KIB: usize = 256 * 1024;

/// The DocumentService implementation.
pub struct DocumentApi {
    state: SharedState,
    upload_budget: Arc<Semaphore>,
}

/// The wire form of a document kind.
pub fn kind_message(kind: DocumentKind) -> pb::DocumentKind {
    match kind {
        DocumentKind::CommitmentLetter => pb::DocumentKind::CommitmentLetter,
        DocumentKind::HouseholdRegister => pb::DocumentKind::HouseholdRegister,
        DocumentKind::IdCardFront => pb::DocumentKind::IdCardFront,
        DocumentKind::IdCardBack => pb::DocumentKind::IdCardBack,
        DocumentKind::Photo => pb::DocumentKind::Photo,
        DocumentKind::Signature => pb::DocumentKind::Signature,
    }
}

/// A document kind from the wire (after `require_enum`).
pub fn kind_of(message: pb::DocumentKind) -> DocumentKind {
    match message {
        pb::DocumentKind::CommitmentLetter => DocumentKind::CommitmentLetter,
        pb::DocumentKind::HouseholdRegister => DocumentKind::HouseholdRegister,
        pb::DocumentKind::IdCardFront => DocumentKind::IdCardFront,
        pb::DocumentKind::IdCardBack => DocumentKind::IdCardBack,
        pb::DocumentKind::Photo => DocumentKind::Photo,
        pb::DocumentKind::Signature => DocumentKind::Signature,
        pb::DocumentKind::Unspecified => unreachable!("require_enum refuses the zero value"),
    }
}

/// The wire form of a document's metadata.
pub fn document_message(document: &Document) -> pb::Document {
    pb::Document {
        document_id: document.id.to_string(),
        owner_person_id: document.owner_person_id.to_string(),
        kind: kind_message(document.kind) as i32,
        content_type: document.content_type.as_str().to_owned(),
        size_bytes: document.size_bytes,
        sha256: document.sha256.clone(),
        created_at: Some(timestamp(document.created_at)),
    }
}

/// What an upload is, for idempotent retries: a retry with the same key must carry the same
/// kind, owner and bytes (compared by hash; the bytes themselves are not kept twice).
#[derive(Clone, PartialEq, prost::Message)]
struct UploadFingerprint {
    #[prost(string, tag = "1")]
    kind: String,
    #[prost(string, tag = "2")]
    owner_person_id: String,
    #[prost(string, tag = "3")]
    sha256: String,
}

fn not_found() -> ApiError {
    ApiError::not_found(Reason::DocumentNotFound, "no such document")
}

/// A document as the caller may see it: another person's document is answered like an unknown
/// one, so ids cannot be probed.
pub fn visible_to(document: Option<Document>, claims: Option<&PersonClaims>) -> ApiResult<Document> {
    match (document, claims) {
        (Some(document), None) => Ok(document),
        (Some(document), Some(claims)) if claims.person_id == document.owner_person_id => Ok(document),
        _ => Err(not_found()),
    }
}

impl DocumentApi {
    /// Handlers over `state`.
    pub fn new(state: SharedState) -> Self {
        Self { state, upload_budget: Arc::new(Semaphore::new(UPLOAD_MEMORY_BUDGET_KIB)) }
    }

    /// Writes the bytes, then the row; removes the bytes again if the row cannot be written.
    /// Runs as its own task so that a caller going away (or the request timeout) between the
    /// two writes cannot leave bytes without a row.
    pub async fn store(
        state: &SharedState,
        id: Uuid,
        owner_person_id: Uuid,
        kind: DocumentKind,
        content_type: ContentType,
        bytes: Vec<u8>,
        uploaded_by: &str,
    ) -> ApiResult<Document> {
        let document = Document {
            id,
            owner_person_id,
            kind,
            content_type,
            size_bytes: i64::try_from(bytes.len()).map_err(ApiError::internal)?,
            sha256: sha256_hex(&bytes),
            object_key: object_key(owner_person_id, id),
            uploaded_by: uploaded_by.to_owned(),
            created_at: state.clock.stored_now(),
        };
        let state = state.clone();
        tokio::spawn(async move {
            let key = document.object_key.clone();
            state.objects.put(&key, Bytes::from(bytes)).await?;
            match state.documents.insert(document).await {
                Ok(document) => Ok(document),
                Err(error) => {
                    if let Err(cleanup) = state.objects.delete(&key).await {
                        tracing::warn!(document_id = %id, error = %cleanup, "document bytes left without a row");
                    }
                    Err(error)
                }
            }
        })
        .await
        .map_err(ApiError::internal)?
    }

    /// Reads the header, then the chunks, of an upload, refusing as early as possible.
    async fn receive(
        &self,
        acting_partner: &str,
        request: &mut Request<Streaming<UploadDocumentRequest>>,
    ) -> Result<Received, Status> {
        let header = match next_part(request).await? {
            None => {
                return Err(ApiError::invalid_field(
                    Reason::InvalidArgument,
                    "header",
                    "the stream is empty: the first message must be the header",
                )
                .into());
            }
            Some(upload_document_request::Part::Header(header)) => header,
            Some(upload_document_request::Part::Chunk(_)) => {
                return Err(ApiError::invalid_field(
                    Reason::InvalidArgument,
                    "header",
                    "the first message must be the header, not a chunk",
                )
                .into());
            }
        };
        let kind = kind_of(require_enum::<pb::DocumentKind>("header.kind", header.kind)?);
        let owner_person_id = require_uuid("header.owner_person_id", &header.owner_person_id)?;
        let declared = declared_size(header.size_bytes)?;
        let declared_sha256 = declared_sha256(&header.sha256)?;
        // Before any byte is buffered: only the owner's partner (or operators) may send them.
        let claims = self.state.person_tokens.authorize(request, owner_person_id).await?;
        if claims.is_none() {
            // Operators name the owner themselves: a document for nobody is refused
            // (NOT_FOUND / PERSON_NOT_FOUND). A person token proves the owner exists.
            self.state.identity.get_person(acting_partner, &owner_person_id.to_string(), "header.").await?;
        }
        // At most 8 MiB: 8192 KiB permits fit a u32.
        let kib = u32::try_from(declared.div_ceil(1024)).map_err(ApiError::internal)?;
        let permit = self.upload_budget.clone().acquire_many_owned(kib).await.map_err(ApiError::internal)?;
        let mut buffer = UploadBuffer::new(declared);
        while let Some(part) = next_part(request).await? {
            match part {
                upload_document_request::Part::Chunk(chunk) => buffer.push(&chunk)?,
                upload_document_request::Part::Header(_) => {
                    return Err(ApiError::invalid_field(
                        Reason::InvalidArgument,
                        "header",
                        "only the first message may be a header",
                    )
                    .into());
                }
            }
        }
        let bytes = buffer.finish()?;
        let sha256 = sha256_hex(&bytes);
        if declared_sha256.is_some_and(|declared| declared != sha256) {
            return Err(ApiError::invalid_field(
                Reason::InvalidArgument,
                "header.sha256",
                "the bytes received do not have the declared SHA-256",
            )
            .into());
        }
        let content_type = check_content(kind, &bytes)?;
        Ok(Received { owner_person_id, kind, content_type, bytes, sha256, _permit: permit })
    }
}

impl DocumentApi {
    /// The letter, once the request is decoded and the token checked: the signature document,
    /// the owner's masked name, the rendering, the write.
    async fn generate_letter(
        &self,
        acting_partner: &str,
        owner_person_id: Uuid,
        member_name: &str,
        relationship: Relationship,
        signature_id: Uuid,
    ) -> ApiResult<GenerateCommitmentLetterResponse> {
        let state = &self.state;
        let signature = state.documents.find(signature_id).await?.ok_or_else(not_found)?;
        check_signature(&signature, owner_person_id)?;
        let person = state.identity.get_person(acting_partner, &owner_person_id.to_string(), "owner_").await?;
        let bytes = state.objects.read(&signature.object_key).await?;
        if sha256_hex(&bytes) != signature.sha256 {
            return Err(ApiError::internal(format_args!("document {} bytes do not match their hash", signature.id)));
        }
        let image = pdf_image(signature.content_type, &bytes).map_err(|error| {
            tracing::info!(document_id = %signature.id, %error, "signature image refused");
            ApiError::failed_precondition(Reason::DocumentInvalid, "the signature image cannot be read")
                .with_metadata("problem", "image")
                .with_field_violation("signature_document_id", "the image is corrupt or larger than 4096 x 4096")
        })?;
        let letter = CommitmentLetter {
            id: Uuid::now_v7(),
            owner_masked_name: person.masked_name,
            member_masked_name: mask_name(member_name),
            relationship,
            date: state.clock.today(),
        };
        let pdf = render(&letter, &image);
        let document = Self::store(
            state,
            letter.id,
            owner_person_id,
            DocumentKind::CommitmentLetter,
            ContentType::Pdf,
            pdf,
            RENDERED_BY,
        )
        .await?;
        tracing::info!(
            document_id = %document.id,
            %owner_person_id,
            signature_document_id = %signature.id,
            relationship = relationship.as_str(),
            size_bytes = document.size_bytes,
            "commitment letter rendered"
        );
        Ok(GenerateCommitmentLetterResponse { document: Some(document_message(&document)) })
    }
}

/// The signature a letter embeds must be the owner's SIGNATURE document: FAILED_PRECONDITION /
/// DOCUMENT_INVALID otherwise (ErrorInfo metadata `problem`: `owner` or `kind`).
pub fn check_signature(document: &Document, owner_person_id: Uuid) -> ApiResult<()> {
    let invalid = |problem: &str, description: &str| {
        ApiError::failed_precondition(Reason::DocumentInvalid, "the signature document cannot be used")
            .with_metadata("problem", problem)
            .with_field_violation("signature_document_id", description)
    };
    if document.owner_person_id != owner_person_id {
        return Err(invalid("owner", "not a document of the owner"));
    }
    if document.kind != DocumentKind::Signature {
        return Err(invalid("kind", "not a SIGNATURE document"));
    }
    Ok(())
}

/// A complete, checked upload.
struct Received {
    /// The upload's share of the memory budget, held until the bytes are stored.
    _permit: OwnedSemaphorePermit,
    owner_person_id: Uuid,
    kind: DocumentKind,
    content_type: ContentType,
    bytes: Vec<u8>,
    sha256: String,
}

/// The next message's part; a message with neither is refused. A broken stream (the client
/// cancelled or went away) ends the call with its status: nothing is stored.
async fn next_part(
    request: &mut Request<Streaming<UploadDocumentRequest>>,
) -> Result<Option<upload_document_request::Part>, Status> {
    match request.get_mut().message().await? {
        None => Ok(None),
        Some(UploadDocumentRequest { part: Some(part) }) => Ok(Some(part)),
        Some(UploadDocumentRequest { part: None }) => {
            Err(ApiError::invalid_field(Reason::InvalidArgument, "part", "a message must carry a header or a chunk")
                .into())
        }
    }
}

/// Streams a document: its metadata, then its bytes in chunks of at most
/// [`DOWNLOAD_CHUNK_BYTES`], checking them against the recorded size and SHA-256 on the way (a
/// mismatch ends the stream INTERNAL rather than passing on damaged bytes as complete).
struct Download {
    document: Option<pb::Document>,
    bytes: BoxStream<'static, ApiResult<Bytes>>,
    pending: Bytes,
    hasher: sha2::Sha256,
    received: u64,
    expected_size: u64,
    expected_sha256: String,
    id: Uuid,
    finished: bool,
}

impl Download {
    async fn next(mut self) -> Option<(Result<DownloadDocumentResponse, Status>, Self)> {
        let message = |part| DownloadDocumentResponse { part: Some(part) };
        if let Some(document) = self.document.take() {
            return Some((Ok(message(download_document_response::Part::Document(document))), self));
        }
        loop {
            if self.finished {
                return None;
            }
            if !self.pending.is_empty() {
                let piece = self.pending.split_to(self.pending.len().min(DOWNLOAD_CHUNK_BYTES));
                return Some((Ok(message(download_document_response::Part::Chunk(piece.to_vec()))), self));
            }
            match self.bytes.next().await {
                Some(Ok(bytes)) => {
                    self.hasher.update(&bytes);
                    self.received += bytes.len() as u64;
                    self.pending = bytes;
                }
                Some(Err(error)) => {
                    self.finished = true;
                    return Some((Err(error.into()), self));
                }
                None => {
                    self.finished = true;
                    let digest = hex::encode(self.hasher.finalize_reset());
                    if self.received != self.expected_size || digest != self.expected_sha256 {
                        let error =
                            ApiError::internal(format_args!("document {} bytes do not match their hash", self.id));
                        return Some((Err(error.into()), self));
                    }
                }
            }
        }
    }
}

#[tonic::async_trait]
impl DocumentService for DocumentApi {
    async fn upload_document(
        &self,
        mut request: Request<Streaming<UploadDocumentRequest>>,
    ) -> Result<Response<UploadDocumentResponse>, Status> {
        let caller = Caller::of(&request)?;
        let received = self.receive(&caller.id, &mut request).await?;
        let fingerprint = UploadFingerprint {
            kind: received.kind.as_str().to_owned(),
            owner_person_id: received.owner_person_id.to_string(),
            sha256: received.sha256.clone(),
        };
        let state = &self.state;
        let response = state
            .idempotency
            .run(&caller.id, "UploadDocument", request.metadata(), &fingerprint, || async {
                let Received { owner_person_id, kind, content_type, bytes, .. } = received;
                let document =
                    Self::store(state, Uuid::now_v7(), owner_person_id, kind, content_type, bytes, &caller.id).await?;
                tracing::info!(
                    document_id = %document.id,
                    owner_person_id = %document.owner_person_id,
                    kind = document.kind.as_str(),
                    content_type = document.content_type.as_str(),
                    size_bytes = document.size_bytes,
                    partner = %caller.id,
                    "document stored"
                );
                Ok(UploadDocumentResponse { document: Some(document_message(&document)) })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn get_document(
        &self,
        request: Request<GetDocumentRequest>,
    ) -> Result<Response<GetDocumentResponse>, Status> {
        let id = require_uuid("document_id", &request.get_ref().document_id)?;
        let claims = self.state.person_tokens.claims(&request).await?;
        let document = visible_to(self.state.documents.find(id).await?, claims.as_ref())?;
        Ok(Response::new(GetDocumentResponse { document: Some(document_message(&document)) }))
    }

    type DownloadDocumentStream = BoxStream<'static, Result<DownloadDocumentResponse, Status>>;

    async fn download_document(
        &self,
        request: Request<DownloadDocumentRequest>,
    ) -> Result<Response<Self::DownloadDocumentStream>, Status> {
        let id = require_uuid("document_id", &request.get_ref().document_id)?;
        let caller = Caller::of(&request)?;
        let claims = self.state.person_tokens.claims(&request).await?;
        let document = visible_to(self.state.documents.find(id).await?, claims.as_ref())?;
        let bytes = self.state.objects.stream(&document.object_key).await?;
        tracing::info!(document_id = %document.id, partner = %caller.id, "document downloaded");
        let download = Download {
            document: Some(document_message(&document)),
            bytes,
            pending: Bytes::new(),
            hasher: sha2::Sha256::new(),
            received: 0,
            expected_size: u64::try_from(document.size_bytes).map_err(ApiError::internal)?,
            expected_sha256: document.sha256.clone(),
            id: document.id,
            finished: false,
        };
        Ok(Response::new(futures::stream::unfold(download, Download::next).boxed()))
    }

    async fn generate_commitment_letter(
        &self,
        request: Request<GenerateCommitmentLetterRequest>,
    ) -> Result<Response<GenerateCommitmentLetterResponse>, Status> {
        let caller = Caller::of(&request)?;
        let body = request.get_ref();
        let owner_person_id = require_uuid("owner_person_id", &body.owner_person_id)?;
        let member_name = require_member_name(&body.member_name)?;
        let relationship =
            super::family::relationship_of(require_enum::<pb::Relationship>("relationship", body.relationship)?);
        let signature_id = require_uuid("signature_document_id", &body.signature_document_id)?;
        let state = &self.state;
        state.person_tokens.authorize(&request, owner_person_id).await?;
        let response = state
            .idempotency
            .run(&caller.id, "GenerateCommitmentLetter", request.metadata(), body, || async {
                Ok(self.generate_letter(&caller.id, owner_person_id, &member_name, relationship, signature_id).await?)
            })
            .await?;
        Ok(Response::new(response))
    }
}
