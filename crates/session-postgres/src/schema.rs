//! The diesel view of the tables the migrations create.

diesel::table! {
    session.sessions (id) {
        id -> Uuid,
        account_id -> Uuid,
        token_hash -> Bytea,
        created_at -> Timestamptz,
        revoked_at -> Nullable<Timestamptz>,
        user_agent -> Nullable<Text>,
        ip -> Nullable<Inet>,
        label -> Nullable<Text>,
    }
}
