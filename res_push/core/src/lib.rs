//! Pure logic of res_push.
