//! `medins.insurance.v1.DocumentService`: uploads streamed in chunks, metadata reads, streamed
//! downloads, and commitment letters rendered from the owner's signature.
//!
//! An upload is held in memory (8 MiB at most) until the client closes the stream and every
//! check passed (the bytes parsed on the bounded pool, `crate::heavy`); only then are they
//! sealed (`store::objects`), an intent recorded, the sealed bytes written to the object store,
//! then the row inserted (removing the intent). A stream that breaks off stores nothing, and a
//! row always names complete bytes.
//!
//! Who may call is the access table's (`domain::access`, DocumentService rows): the owner, a
//! guardian of a minor owner, operators. Every call that names a person (the owner) is recorded
//! in that person's access history.

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, stream::BoxStream};
use medins_common::{
    ApiError, ApiResult, Reason,
    convert::timestamp,
    error::{require_enum, require_uuid},
    mask::mask_name,
};
use medins_proto::insurance::v1::{
    self as pb, DownloadDocumentRequest, DownloadDocumentResponse, GenerateCommitmentLetterRequest,
    GenerateCommitmentLetterResponse, GetDocumentRequest, GetDocumentResponse, UploadDocumentRequest,
    UploadDocumentResponse, document_service_server::DocumentService, download_document_response,
    upload_document_request,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;

use super::{
    SharedState, State,
    access::{CallAccess, HandlerFacts},
};
use crate::{
    domain::{
        access::Standing,
        document::{
            ContentType, Document, DocumentKind, SubjectNeed, UploadBuffer, check_content, declared_sha256,
            declared_size, image_too_large, inspect, inspection_estimate, object_key, sha256_hex, subject_need,
        },
        family::{Relationship, require_not_self},
        image::{image_header, pdf_image},
        letter::{CommitmentLetter, render, require_member_name},
        voucher::require_insured,
    },
    heavy::HeavyRefusal,
    store::objects::{open, seal},
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
        DocumentKind::Invoice => pb::DocumentKind::Invoice,
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
        pb::DocumentKind::Invoice => DocumentKind::Invoice,
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
        subject_person_id: document.subject_person_id.map(|id| id.to_string()).unwrap_or_default(),
        relationship: document.relationship.map(|r| super::family::relationship_message(r) as i32).unwrap_or_default(),
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
    #[prost(string, tag = "4")]
    subject_person_id: String,
    #[prost(string, tag = "5")]
    relationship: String,
}

fn not_found() -> ApiError {
    ApiError::of(Reason::DocumentNotFound, "no such document")
}

/// What ties a stored document to what it proves, and who sent it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tie {
    /// The person it shows or names (`None`: the owner).
    pub subject_person_id: Option<Uuid>,
    /// A letter's relationship.
    pub relationship: Option<Relationship>,
    /// The person whose token uploaded it, if not the owner's (a guardian).
    pub uploaded_by_person_id: Option<Uuid>,
}

/// Whether identity-svc knows `person` (a refused call is recorded for an existing person only;
/// errors count as unknown: the answer does not depend on this).
async fn person_exists(acting_partner: &str, state: &State, person: Uuid) -> bool {
    state.identity.get_person(acting_partner, &person.to_string(), "").await.is_ok()
}

/// The person a document upload or letter names, by name and ID number: an insured person
/// (FAILED_PRECONDITION / NOT_INSURED otherwise, the answer AddFamilyMember gives for the same
/// pair), matched without creating anyone.
async fn insured_person(
    acting_partner: &str,
    state: &State,
    name: &str,
    id_number: &str,
    prefix: &str,
) -> ApiResult<Uuid> {
    let Some(person) = state.identity.match_person(acting_partner, name, id_number, None, prefix).await? else {
        require_insured(None)?;
        return Err(ApiError::internal("an unknown person passed the insured check"));
    };
    let account = state.accounts.find_open_by_person(person).await?;
    require_insured(account.as_ref().map(|account| account.status))?;
    Ok(person)
}

/// Parses `bytes` on the bounded pool within the decoding budget: IMAGE_TOO_LARGE before any
/// decode when the header promises more than the budget, DOCUMENT_UNREADABLE when they do not
/// parse.
async fn inspect_on_pool(state: &State, content_type: ContentType, bytes: Arc<Vec<u8>>) -> ApiResult<()> {
    let needed = inspection_estimate(content_type, &bytes)?;
    match state.heavy.run(needed, move || inspect(content_type, &bytes, needed)).await? {
        Ok(result) => result,
        Err(HeavyRefusal::OverBudget { needed, budget }) => Err(image_too_large(needed, budget)),
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
    #[allow(clippy::too_many_arguments)]
    pub async fn store(
        state: &SharedState,
        id: Uuid,
        owner_person_id: Uuid,
        kind: DocumentKind,
        content_type: ContentType,
        bytes: Vec<u8>,
        uploaded_by: &str,
        tie: Tie,
    ) -> ApiResult<Document> {
        let size_bytes = i64::try_from(bytes.len()).map_err(ApiError::internal)?;
        let sha256 = sha256_hex(&bytes);
        let cipher = state.document_cipher.clone();
        let sealed = tokio::task::spawn_blocking(move || seal(&cipher, id, owner_person_id, &bytes))
            .await
            .map_err(ApiError::internal)?;
        let document = Document {
            id,
            owner_person_id,
            kind,
            content_type,
            size_bytes,
            sha256,
            object_key: object_key(owner_person_id, id),
            uploaded_by: uploaded_by.to_owned(),
            created_at: state.clock.stored_now(),
            subject_person_id: Some(tie.subject_person_id.unwrap_or(owner_person_id)),
            relationship: tie.relationship,
            uploaded_by_person_id: tie.uploaded_by_person_id,
            wrapped_key: Some(sealed.wrapped_key),
        };
        let state = state.clone();
        tokio::spawn(async move {
            let key = document.object_key.clone();
            // The intent first: if this process dies between the two writes, the sweeper
            // finds the bytes without a row.
            state.documents.record_intent(key.clone(), state.clock.stored_now()).await?;
            state.objects.put(&key, Bytes::from(sealed.object)).await?;
            match state.documents.insert(document).await {
                Ok(document) => Ok(document),
                Err(error) => {
                    match state.objects.delete(&key).await {
                        Ok(()) => {
                            let _ = state.documents.forget_intent(key).await;
                        }
                        Err(cleanup) => {
                            tracing::warn!(document_id = %id, error = %cleanup, "document bytes left for the sweeper");
                        }
                    }
                    Err(error)
                }
            }
        })
        .await
        .map_err(ApiError::internal)?
    }

    /// Reads the header of an upload and decides who may send it. Returns the header's facts
    /// and the owner (for the access history, also when refused).
    async fn receive_header(
        &self,
        access: &CallAccess,
        request: &mut Request<Streaming<UploadDocumentRequest>>,
    ) -> Result<(Header, Standing), (Option<Uuid>, Status)> {
        let header = match next_part(request).await.map_err(|status| (None, status))? {
            None => {
                return Err((
                    None,
                    ApiError::invalid_field(
                        Reason::InvalidArgument,
                        "header",
                        "the stream is empty: the first message must be the header",
                    )
                    .into(),
                ));
            }
            Some(upload_document_request::Part::Header(header)) => header,
            Some(upload_document_request::Part::Chunk(_)) => {
                return Err((
                    None,
                    ApiError::invalid_field(
                        Reason::InvalidArgument,
                        "header",
                        "the first message must be the header, not a chunk",
                    )
                    .into(),
                ));
            }
        };
        let decoded = decode_header(&header).map_err(|error| (None, error.into()))?;
        let owner = decoded.owner_person_id;
        // Before any byte is buffered: only the owner, a guardian, or operators may send them.
        let standing =
            access.decide(&self.state, owner, HandlerFacts::default()).await.map_err(|e| (Some(owner), e.into()))?;
        Ok((decoded, standing))
    }

    /// Reads the chunks of an upload (the header is checked and the caller admitted), refusing
    /// as early as possible, then parses the bytes on the pool.
    async fn receive(
        &self,
        acting_partner: &str,
        header: Header,
        token_subject: Option<Uuid>,
        request: &mut Request<Streaming<UploadDocumentRequest>>,
    ) -> Result<Received, Status> {
        let state = &self.state;
        let owner_person_id = header.owner_person_id;
        let subject = match (&header.need, &header.subject) {
            (SubjectNeed::Owner, _) | (_, None) => None,
            (_, Some(subject)) => {
                let person =
                    insured_person(acting_partner, state, &subject.name, &subject.id_number, "header.subject.").await?;
                if header.need == SubjectNeed::Letter {
                    require_not_self(owner_person_id, person)?;
                }
                Some(person)
            }
        };
        // At most 8 MiB: 8192 KiB permits fit a u32.
        let kib = u32::try_from(header.declared.div_ceil(1024)).map_err(ApiError::internal)?;
        let permit = self.upload_budget.clone().acquire_many_owned(kib).await.map_err(ApiError::internal)?;
        let mut buffer = UploadBuffer::new(header.declared);
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
        if header.declared_sha256.is_some_and(|declared| declared != sha256) {
            return Err(ApiError::invalid_field(
                Reason::InvalidArgument,
                "header.sha256",
                "the bytes received do not have the declared SHA-256",
            )
            .into());
        }
        let content_type = check_content(header.kind, &bytes)?;
        let bytes = Arc::new(bytes);
        inspect_on_pool(state, content_type, bytes.clone()).await?;
        let bytes = Arc::try_unwrap(bytes).unwrap_or_else(|shared| shared.as_ref().clone());
        let tie = Tie {
            subject_person_id: subject,
            relationship: header.relationship,
            uploaded_by_person_id: token_subject.filter(|subject| *subject != owner_person_id),
        };
        Ok(Received { owner_person_id, kind: header.kind, content_type, bytes, sha256, tie, _permit: permit })
    }
}

/// An upload's header, decoded.
struct Header {
    kind: DocumentKind,
    owner_person_id: Uuid,
    declared: u64,
    declared_sha256: Option<String>,
    need: SubjectNeed,
    subject: Option<pb::PersonIdentity>,
    relationship: Option<Relationship>,
}

/// Every field of a header, checked before anything is looked up.
fn decode_header(header: &pb::UploadDocumentHeader) -> ApiResult<Header> {
    let kind = kind_of(require_enum::<pb::DocumentKind>("header.kind", header.kind)?);
    let owner_person_id = require_uuid("header.owner_person_id", &header.owner_person_id)?;
    let declared = declared_size(header.size_bytes)?;
    let declared_sha256 = declared_sha256(&header.sha256)?;
    let subject = header.subject.clone().filter(|s| !(s.name.is_empty() && s.id_number.is_empty()));
    let need = subject_need(kind, subject.is_some(), header.relationship != 0)?;
    let relationship = if need == SubjectNeed::Letter {
        Some(super::family::relationship_of(require_enum::<pb::Relationship>(
            "header.relationship",
            header.relationship,
        )?))
    } else {
        None
    };
    let subject = match subject {
        Some(subject) => {
            let name = medins_common::name::require_name("header.subject.name", &subject.name)?;
            if subject.id_number.is_empty() || subject.id_number.len() > 32 {
                return Err(ApiError::invalid_field(Reason::InvalidIdNumber, "header.subject.id_number", "required"));
            }
            Some(pb::PersonIdentity { name, id_number: subject.id_number })
        }
        None => None,
    };
    Ok(Header { kind, owner_person_id, declared, declared_sha256, need, subject, relationship })
}

impl DocumentApi {
    /// The bytes of a stored document, opened (rows stored in clear before documents were
    /// sealed are read as they are) and checked against the recorded size and SHA-256.
    pub async fn read_bytes(state: &State, document: &Document) -> ApiResult<Vec<u8>> {
        let stored = state.objects.read(&document.object_key).await?;
        let bytes = match document.wrapped_key.clone() {
            Some(wrapped_key) => {
                let (cipher, id, owner) = (state.document_cipher.clone(), document.id, document.owner_person_id);
                tokio::task::spawn_blocking(move || open(&cipher, id, owner, &wrapped_key, &stored))
                    .await
                    .map_err(ApiError::internal)??
            }
            None => stored.to_vec(),
        };
        if bytes.len() as i64 != document.size_bytes || sha256_hex(&bytes) != document.sha256 {
            return Err(ApiError::internal(format_args!("document {} bytes do not match their hash", document.id)));
        }
        Ok(bytes)
    }

    /// The letter, once the request is decoded and the caller admitted: the signature document,
    /// the member, the owner's masked name, the rendering (on the pool), the write.
    async fn generate_letter(
        &self,
        acting_partner: &str,
        letter: LetterRequest,
    ) -> ApiResult<GenerateCommitmentLetterResponse> {
        let state = &self.state;
        let LetterRequest { owner_person_id, member_name, member_id_number, relationship, signature_id } = letter;
        let signature = state.documents.find(signature_id).await?.ok_or_else(not_found)?;
        check_signature(&signature, owner_person_id)?;
        let member = insured_person(acting_partner, state, &member_name, &member_id_number, "member_").await?;
        require_not_self(owner_person_id, member)?;
        let person = state.identity.get_person(acting_partner, &owner_person_id.to_string(), "owner_").await?;
        let bytes = Self::read_bytes(state, &signature).await?;
        let unreadable = |error: crate::domain::image::ImageError| {
            tracing::info!(document_id = %signature_id, %error, "signature image refused");
            ApiError::of(Reason::DocumentInvalid, "the signature image cannot be read")
                .with_metadata("problem", "image")
                .with_field_violation("signature_document_id", "the image is corrupt or larger than 4096 x 4096")
        };
        let header = image_header(signature.content_type, &bytes).map_err(unreadable)?;
        let letter = CommitmentLetter {
            id: Uuid::now_v7(),
            owner_masked_name: person.masked_name,
            member_masked_name: mask_name(&member_name),
            relationship,
            date: state.clock.today(),
        };
        // The decode, the flattened copy, and the PDF (at most the pixels again, deflated).
        let needed = header.decode_bytes() + header.decode_bytes() / 2;
        let content_type = signature.content_type;
        let rendering = letter.clone();
        let rendered = state
            .heavy
            .run(needed, move || pdf_image(content_type, &bytes, needed).map(|image| render(&rendering, &image)))
            .await?;
        let pdf = match rendered {
            Ok(pdf) => pdf.map_err(unreadable)?,
            Err(HeavyRefusal::OverBudget { needed, budget }) => return Err(image_too_large(needed, budget)),
        };
        let tie =
            Tie { subject_person_id: Some(member), relationship: Some(relationship), uploaded_by_person_id: None };
        let document = Self::store(
            state,
            letter.id,
            owner_person_id,
            DocumentKind::CommitmentLetter,
            ContentType::Pdf,
            pdf,
            RENDERED_BY,
            tie,
        )
        .await?;
        tracing::info!(
            document_id = %document.id,
            %owner_person_id,
            member_person_id = %member,
            signature_document_id = %signature.id,
            relationship = relationship.as_str(),
            size_bytes = document.size_bytes,
            "commitment letter rendered"
        );
        Ok(GenerateCommitmentLetterResponse { document: Some(document_message(&document)) })
    }

    /// A document the caller may see (the access table's DocumentService rows), recorded in its
    /// owner's access history; anyone else gets the answer an unknown id gets.
    async fn visible(&self, access: &CallAccess, id: Uuid) -> Result<Document, Status> {
        let state = &self.state;
        let Some(document) = state.documents.find(id).await? else {
            return Err(not_found().into());
        };
        let result = access
            .decide(state, document.owner_person_id, HandlerFacts::default())
            .await
            .map(|_| ())
            .map_err(Status::from);
        access.record(state, Some(document.owner_person_id), &result).await;
        result.map(|()| document)
    }
}

/// A GenerateCommitmentLetter request, decoded.
struct LetterRequest {
    owner_person_id: Uuid,
    member_name: String,
    member_id_number: String,
    relationship: Relationship,
    signature_id: Uuid,
}

fn decode_letter(body: &GenerateCommitmentLetterRequest) -> ApiResult<LetterRequest> {
    let owner_person_id = require_uuid("owner_person_id", &body.owner_person_id)?;
    let member_name = require_member_name(&body.member_name)?;
    if body.member_id_number.is_empty() || body.member_id_number.len() > 32 {
        return Err(ApiError::invalid_field(Reason::InvalidIdNumber, "member_id_number", "required"));
    }
    let relationship =
        super::family::relationship_of(require_enum::<pb::Relationship>("relationship", body.relationship)?);
    let signature_id = require_uuid("signature_document_id", &body.signature_document_id)?;
    Ok(LetterRequest {
        owner_person_id,
        member_name,
        member_id_number: body.member_id_number.clone(),
        relationship,
        signature_id,
    })
}

/// The signature a letter embeds must be the owner's SIGNATURE document: FAILED_PRECONDITION /
/// DOCUMENT_INVALID otherwise (ErrorInfo metadata `problem`: `owner` or `kind`).
pub fn check_signature(document: &Document, owner_person_id: Uuid) -> ApiResult<()> {
    let invalid = |problem: &str, description: &str| {
        ApiError::of(Reason::DocumentInvalid, "the signature document cannot be used")
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
    tie: Tie,
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

/// Streams a document: its metadata, then its opened bytes in chunks of at most
/// [`DOWNLOAD_CHUNK_BYTES`] (checked against the recorded size and SHA-256 before the first
/// message), holding its share of the memory budget until the last chunk is sent.
struct Download {
    document: Option<pb::Document>,
    pending: Bytes,
    _permit: OwnedSemaphorePermit,
}

impl Download {
    async fn next(mut self) -> Option<(Result<DownloadDocumentResponse, Status>, Self)> {
        let message = |part| DownloadDocumentResponse { part: Some(part) };
        if let Some(document) = self.document.take() {
            return Some((Ok(message(download_document_response::Part::Document(document))), self));
        }
        if self.pending.is_empty() {
            return None;
        }
        let piece = self.pending.split_to(self.pending.len().min(DOWNLOAD_CHUNK_BYTES));
        Some((Ok(message(download_document_response::Part::Chunk(piece.to_vec()))), self))
    }
}

#[tonic::async_trait]
impl DocumentService for DocumentApi {
    async fn upload_document(
        &self,
        mut request: Request<Streaming<UploadDocumentRequest>>,
    ) -> Result<Response<UploadDocumentResponse>, Status> {
        let state = &self.state;
        let access = CallAccess::begin(state, &request).await?;
        let (header, standing) = match self.receive_header(&access, &mut request).await {
            Ok(admitted) => admitted,
            Err((owner, status)) => {
                if let Some(owner) = owner
                    && person_exists(&access.caller.id, state, owner).await
                {
                    access.record::<()>(state, Some(owner), &Err(status.clone())).await;
                }
                return Err(status);
            }
        };
        let owner = header.owner_person_id;
        if standing == Standing::Operator {
            // Operators name the owner themselves: a document for nobody is refused (NOT_FOUND /
            // PERSON_NOT_FOUND), and not recorded (there is nobody to show it to). A person
            // token, or a guardian's binding, proves the owner exists.
            state.identity.get_person(&access.caller.id, &owner.to_string(), "header.").await?;
        }
        let result = self.upload(&access, header, &mut request).await;
        access.record(state, Some(owner), &result).await;
        result.map(Response::new)
    }

    async fn get_document(
        &self,
        request: Request<GetDocumentRequest>,
    ) -> Result<Response<GetDocumentResponse>, Status> {
        let access = CallAccess::begin(&self.state, &request).await?;
        let id = require_uuid("document_id", &request.get_ref().document_id)?;
        let document = self.visible(&access, id).await?;
        Ok(Response::new(GetDocumentResponse { document: Some(document_message(&document)) }))
    }

    type DownloadDocumentStream = BoxStream<'static, Result<DownloadDocumentResponse, Status>>;

    async fn download_document(
        &self,
        request: Request<DownloadDocumentRequest>,
    ) -> Result<Response<Self::DownloadDocumentStream>, Status> {
        let access = CallAccess::begin(&self.state, &request).await?;
        let id = require_uuid("document_id", &request.get_ref().document_id)?;
        let document = self.visible(&access, id).await?;
        // At most 8 MiB, held until the last chunk is sent.
        let kib = u32::try_from((document.size_bytes.max(0) as u64).div_ceil(1024)).map_err(ApiError::internal)?;
        let permit = self.upload_budget.clone().acquire_many_owned(kib).await.map_err(ApiError::internal)?;
        let bytes = Self::read_bytes(&self.state, &document).await?;
        tracing::info!(document_id = %document.id, partner = %access.caller.id, "document downloaded");
        let download =
            Download { document: Some(document_message(&document)), pending: Bytes::from(bytes), _permit: permit };
        Ok(Response::new(futures::stream::unfold(download, Download::next).boxed()))
    }

    async fn generate_commitment_letter(
        &self,
        request: Request<GenerateCommitmentLetterRequest>,
    ) -> Result<Response<GenerateCommitmentLetterResponse>, Status> {
        let state = &self.state;
        let access = CallAccess::begin(state, &request).await?;
        let body = request.get_ref();
        let letter = decode_letter(body)?;
        let owner = letter.owner_person_id;
        match access.decide(state, owner, HandlerFacts::default()).await {
            Err(error) => {
                let status = Status::from(error);
                if person_exists(&access.caller.id, state, owner).await {
                    access.record::<()>(state, Some(owner), &Err(status.clone())).await;
                }
                return Err(status);
            }
            // An operator's letter for nobody is PERSON_NOT_FOUND, and not recorded.
            Ok(Standing::Operator) => {
                state.identity.get_person(&access.caller.id, &owner.to_string(), "owner_").await?;
            }
            Ok(_) => {}
        }
        let result = state
            .idempotency
            .run(&access.caller.id, "GenerateCommitmentLetter", request.metadata(), body, || async {
                Ok(self.generate_letter(&access.caller.id, letter).await?)
            })
            .await;
        access.record(state, Some(owner), &result).await;
        Ok(Response::new(result?))
    }
}

impl DocumentApi {
    /// An admitted upload: the bytes, then the idempotent write.
    async fn upload(
        &self,
        access: &CallAccess,
        header: Header,
        request: &mut Request<Streaming<UploadDocumentRequest>>,
    ) -> Result<UploadDocumentResponse, Status> {
        let received = self.receive(&access.caller.id, header, access.token_subject, request).await?;
        let fingerprint = UploadFingerprint {
            kind: received.kind.as_str().to_owned(),
            owner_person_id: received.owner_person_id.to_string(),
            sha256: received.sha256.clone(),
            subject_person_id: received.tie.subject_person_id.map(|id| id.to_string()).unwrap_or_default(),
            relationship: received.tie.relationship.map(|r| r.as_str().to_owned()).unwrap_or_default(),
        };
        let state = &self.state;
        let caller = &access.caller;
        state
            .idempotency
            .run(&caller.id, "UploadDocument", request.metadata(), &fingerprint, || async {
                let Received { owner_person_id, kind, content_type, bytes, tie, .. } = received;
                let document =
                    Self::store(state, Uuid::now_v7(), owner_person_id, kind, content_type, bytes, &caller.id, tie)
                        .await?;
                tracing::info!(
                    document_id = %document.id,
                    owner_person_id = %document.owner_person_id,
                    kind = document.kind.as_str(),
                    content_type = document.content_type.as_str(),
                    size_bytes = document.size_bytes,
                    partner = %caller.id,
                    guardian = tie.uploaded_by_person_id.is_some(),
                    "document stored"
                );
                Ok(UploadDocumentResponse { document: Some(document_message(&document)) })
            })
            .await
    }
}
