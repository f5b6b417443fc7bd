//! Token revocations at rest, and the feed that keeps this process's verifier current.
//!
//! [`revoke_tokens_in`] writes one on the caller's connection, so it commits with whatever ended
//! the partner's right to act for the person (an unlink, a revocation by the person, a
//! suspension, a superseded claim).

use medins_common::db::DbUuid;
use std::{sync::Arc, time::Instant};

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use medins_common::{
    ApiResult,
    clock::SharedClock,
    db::{Db, DbConnection},
    revocation::{REVOCATION_REFRESH_INTERVAL, Revocation, RevocationReason, TokenRevocations, revocation_window},
};
use uuid::Uuid;

use super::schema::token_revocations;

/// Unix milliseconds of a stored time.
pub fn millis(at: NaiveDateTime) -> i64 {
    at.and_utc().timestamp_millis()
}

/// Revokes every token of `partner_id` (of every partner when `None`) for `person_id` issued at
/// or before `now`, on the caller's connection: call it inside the transaction of the change
/// that justifies it. Returns the revocation as the feed carries it.
pub fn revoke_tokens_in(
    conn: &mut DbConnection,
    person_id: Uuid,
    partner_id: Option<&str>,
    now: NaiveDateTime,
    reason: RevocationReason,
) -> ApiResult<Revocation> {
    diesel::insert_into(token_revocations::table)
        .values((
            token_revocations::id.eq(DbUuid(Uuid::now_v7())),
            token_revocations::person_id.eq(DbUuid(person_id)),
            token_revocations::partner_id.eq(partner_id),
            token_revocations::revoked_at.eq(now),
            token_revocations::reason.eq(reason),
        ))
        .execute(conn)?;
    Ok(Revocation { person_id, partner_id: partner_id.map(str::to_owned), revoked_at_ms: millis(now) })
}

/// The latest revocation (Unix milliseconds) that applies to tokens of `partner_id` for
/// `person_id`: its own or every partner's.
pub fn latest_revocation_in(conn: &mut DbConnection, person_id: Uuid, partner_id: &str) -> ApiResult<Option<i64>> {
    let latest: Option<NaiveDateTime> = token_revocations::table
        .filter(token_revocations::person_id.eq(DbUuid(person_id)))
        .filter(token_revocations::partner_id.eq(partner_id).or(token_revocations::partner_id.is_null()))
        .select(diesel::dsl::max(token_revocations::revoked_at))
        .first(conn)?;
    Ok(latest.map(millis))
}

/// The token_revocations table.
#[derive(Clone, Debug)]
pub struct RevocationStore {
    db: Db,
}

impl RevocationStore {
    /// A store over `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Every revocation made after `since`, oldest first.
    pub async fn list_since(&self, since: NaiveDateTime) -> ApiResult<Vec<Revocation>> {
        self.db
            .read(move |conn| {
                let rows: Vec<(DbUuid, Option<String>, NaiveDateTime)> = token_revocations::table
                    .filter(token_revocations::revoked_at.gt(since))
                    .order(token_revocations::revoked_at.asc())
                    .select((
                        token_revocations::person_id,
                        token_revocations::partner_id,
                        token_revocations::revoked_at,
                    ))
                    .load(conn)?;
                Ok(rows
                    .into_iter()
                    .map(|(person_id, partner_id, revoked_at)| Revocation {
                        person_id: person_id.into(),
                        partner_id,
                        revoked_at_ms: millis(revoked_at),
                    })
                    .collect())
            })
            .await
    }

    /// Start of the feed's window at `now`.
    pub fn window_start(now: DateTime<Utc>) -> NaiveDateTime {
        (now - revocation_window()).naive_utc()
    }

    /// Replaces `into`'s revocations with those of the window; returns how many.
    pub async fn refresh(&self, into: &TokenRevocations, clock: &SharedClock) -> ApiResult<usize> {
        let began = Instant::now();
        let revocations = self.list_since(Self::window_start(clock.now())).await?;
        let count = revocations.len();
        into.replace(revocations, began);
        Ok(count)
    }

    /// Refreshes `into` every [`REVOCATION_REFRESH_INTERVAL`] until the task is aborted. An outage
    /// is logged once; after a few seconds of it, `into` fails closed by itself.
    pub fn spawn_refresher(
        self,
        into: Arc<crate::service::person_token::PersonTokens>,
        clock: SharedClock,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(REVOCATION_REFRESH_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                ticks.tick().await;
                match self.refresh(into.verifier().revocations(), &clock).await {
                    Ok(_) if failing => {
                        tracing::info!("person-token revocations refreshed again");
                        failing = false;
                    }
                    Ok(_) => {}
                    // Once per outage: the database being down is reported elsewhere too.
                    Err(error) if !failing => {
                        tracing::warn!(%error, "person-token revocations not refreshed; tokens are refused after a few seconds");
                        failing = true;
                    }
                    Err(_) => {}
                }
            }
        })
    }
}
