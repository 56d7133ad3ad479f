//! The diesel view of the tables the migrations create.

diesel::table! {
    /// One row per session, active or revoked.
    session.sessions (id) {
        /// A UUIDv7.
        id -> Uuid,
        /// The host application's account id.
        account_id -> Uuid,
        /// The token hash's 32 bytes.
        token_hash -> Bytea,
        /// When the session was created.
        created_at -> Timestamptz,
        /// When it was revoked; NULL while active.
        revoked_at -> Nullable<Timestamptz>,
        /// As normalised at creation.
        user_agent -> Nullable<Text>,
        /// The client's address, as given at creation.
        ip -> Nullable<Inet>,
        /// As given at creation.
        label -> Nullable<Text>,
        /// Why it was revoked, set with `revoked_at`; NULL while active and
        /// for sessions revoked before reasons were recorded.
        revocation_reason -> Nullable<Text>,
        /// Who revoked it (an API key's name), set with `revoked_at`; NULL
        /// while active and for revocations no key made.
        revoked_by -> Nullable<Text>,
    }
}
