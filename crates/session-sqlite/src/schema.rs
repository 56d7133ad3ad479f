//! The `sessions` table as diesel sees it; kept by hand in step with
//! `migrations/sqlite`, whose comments explain the column encodings.

diesel::table! {
    sessions (id) {
        id -> Binary,
        account_id -> Binary,
        token_hash -> Binary,
        created_at -> BigInt,
        revoked_at -> Nullable<BigInt>,
        user_agent -> Nullable<Text>,
        ip -> Nullable<Text>,
        label -> Nullable<Text>,
    }
}
