//! Helpers of the document tests, and of every flow that needs documents (family bindings,
//! cards): the DocumentService client, an upload in 32 KiB chunks, a download gathered back into
//! bytes, the files of the stack's document folder, and small real sample files.
//!
//! ```ignore
//! let person = stack.front_door_person(&stack.keys.mini_program).await;
//! let register = stack
//!     .upload_document(&stack.keys.mini_program, Some(&person.token), &person.person_id,
//!         DocumentKind::HouseholdRegister, &sample_pdf())
//!     .await
//!     .expect("upload");
//! // register.document_id, register.content_type == "application/pdf", ...
//! ```

use std::path::{Path, PathBuf};

use medins_proto::insurance::v1::{
    Document, DocumentKind, DownloadDocumentRequest, PersonIdentity, Relationship, UploadDocumentHeader,
    UploadDocumentRequest, document_service_client::DocumentServiceClient, download_document_response,
    upload_document_request,
};
use tonic::{Request, Status};

use super::{Intercepted, Stack, interceptor};

/// Chunk size of [`Stack::upload_document`] (the server takes messages up to 64 KiB).
pub const UPLOAD_CHUNK_BYTES: usize = 32 * 1024;

/// A tiny real PNG (8 x 8 RGB).
pub fn sample_png() -> Vec<u8> {
    include_bytes!("../fixtures/sample.png").to_vec()
}

/// A tiny real JPEG (baseline JFIF, 25 x 13).
pub fn sample_jpeg() -> Vec<u8> {
    include_bytes!("../fixtures/photo.jpg").to_vec()
}

/// A tiny real one-page PDF (text "medins sample document").
pub fn sample_pdf() -> Vec<u8> {
    include_bytes!("../fixtures/sample.pdf").to_vec()
}

/// A drawn signature: a 120 x 40 RGBA PNG, transparent around a dark stroke (every PNG row
/// filter is used once at least).
pub fn sample_signature_png() -> Vec<u8> {
    include_bytes!("../fixtures/signature.png").to_vec()
}

/// The document store of a stack whose files live in `dir`.
pub fn store_url(dir: &Path) -> String {
    format!("file://{}", dir.join("documents").display())
}

/// The messages of an upload: the header (declaring the size, no SHA-256), then `bytes` in
/// chunks of `chunk_bytes`.
pub fn upload_messages(
    owner_person_id: &str,
    kind: DocumentKind,
    bytes: &[u8],
    chunk_bytes: usize,
) -> Vec<UploadDocumentRequest> {
    upload_messages_about(owner_person_id, kind, bytes, chunk_bytes, None, Relationship::Unspecified)
}

/// [`upload_messages`] with the header naming whom the document shows (a register page's
/// person, a letter's member) and a letter's relationship.
pub fn upload_messages_about(
    owner_person_id: &str,
    kind: DocumentKind,
    bytes: &[u8],
    chunk_bytes: usize,
    subject: Option<PersonIdentity>,
    relationship: Relationship,
) -> Vec<UploadDocumentRequest> {
    let header = UploadDocumentHeader {
        kind: kind as i32,
        owner_person_id: owner_person_id.to_owned(),
        size_bytes: bytes.len() as i64,
        sha256: String::new(),
        subject,
        relationship: relationship as i32,
    };
    std::iter::once(upload_document_request::Part::Header(header))
        .chain(bytes.chunks(chunk_bytes).map(|chunk| upload_document_request::Part::Chunk(chunk.to_vec())))
        .map(|part| UploadDocumentRequest { part: Some(part) })
        .collect()
}

/// A streaming request of `messages`, with a person token when given.
pub fn upload_request(
    messages: Vec<UploadDocumentRequest>,
    token: Option<&str>,
) -> Request<futures::stream::Iter<std::vec::IntoIter<UploadDocumentRequest>>> {
    let mut request = Request::new(futures::stream::iter(messages));
    if let Some(token) = token {
        request.metadata_mut().insert("x-person-token", token.parse().expect("ascii token"));
    }
    request
}

impl Stack {
    /// insurance-svc documents, as the partner holding `key`.
    pub fn documents(&self, key: Option<&str>) -> DocumentServiceClient<Intercepted> {
        DocumentServiceClient::with_interceptor(self.insurance_channel(), interceptor(key))
            .max_decoding_message_size(64 * 1024)
            .max_encoding_message_size(64 * 1024)
    }

    /// Uploads `bytes` as a document of `kind` owned by `owner_person_id`, as the partner
    /// holding `key` with the owner's person `token` (None: no token, e.g. operators).
    pub async fn upload_document(
        &self,
        key: &str,
        token: Option<&str>,
        owner_person_id: &str,
        kind: DocumentKind,
        bytes: &[u8],
    ) -> Result<Document, Status> {
        let messages = upload_messages(owner_person_id, kind, bytes, UPLOAD_CHUNK_BYTES);
        let response = self.documents(Some(key)).upload_document(upload_request(messages, token)).await?;
        Ok(response.into_inner().document.expect("an uploaded document"))
    }

    /// Uploads a document that names whom it shows (`subject`, by name and ID number) and, for a
    /// letter, the relationship.
    #[allow(clippy::too_many_arguments)]
    pub async fn upload_document_about(
        &self,
        key: &str,
        token: Option<&str>,
        owner_person_id: &str,
        kind: DocumentKind,
        bytes: &[u8],
        subject: Option<PersonIdentity>,
        relationship: Relationship,
    ) -> Result<Document, Status> {
        let messages = upload_messages_about(owner_person_id, kind, bytes, UPLOAD_CHUNK_BYTES, subject, relationship);
        let response = self.documents(Some(key)).upload_document(upload_request(messages, token)).await?;
        Ok(response.into_inner().document.expect("an uploaded document"))
    }

    /// Downloads a document: its metadata and all its bytes (checking the stream's shape: the
    /// metadata first, then chunks only).
    pub async fn download_document(
        &self,
        key: &str,
        token: Option<&str>,
        document_id: &str,
    ) -> Result<(Document, Vec<u8>), Status> {
        let mut request = Request::new(DownloadDocumentRequest { document_id: document_id.to_owned() });
        if let Some(token) = token {
            request.metadata_mut().insert("x-person-token", token.parse().expect("ascii token"));
        }
        let mut stream = self.documents(Some(key)).download_document(request).await?.into_inner();
        let first = stream.message().await?.expect("a first message");
        let Some(download_document_response::Part::Document(document)) = first.part else {
            panic!("the first message of a download is the metadata");
        };
        let mut bytes = Vec::new();
        while let Some(message) = stream.message().await? {
            match message.part {
                Some(download_document_response::Part::Chunk(chunk)) => {
                    assert!(chunk.len() <= UPLOAD_CHUNK_BYTES, "download chunk of {} bytes", chunk.len());
                    bytes.extend_from_slice(&chunk);
                }
                other => panic!("after the metadata only chunks come, got {other:?}"),
            }
        }
        Ok((document, bytes))
    }

    /// The folder the stack's insurance-svc keeps document bytes in.
    pub fn document_folder(&self) -> PathBuf {
        self._dir.path().join("documents")
    }

    /// Every file under the document folder (relative paths, sorted): what "nothing stored"
    /// means for the object store.
    pub fn document_files(&self) -> Vec<PathBuf> {
        fn walk(root: &Path, dir: &Path, files: &mut Vec<PathBuf>) {
            let Ok(entries) = std::fs::read_dir(dir) else { return };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(root, &path, files);
                } else {
                    files.push(path.strip_prefix(root).expect("under the root").to_owned());
                }
            }
        }
        let root = self.document_folder();
        let mut files = Vec::new();
        walk(&root, &root, &mut files);
        files.sort();
        files
    }
}
