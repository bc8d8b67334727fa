//! The sandbox's tests, in one binary: one link of the client library and
//! the sandbox instead of one per file. Each module is one subject
//! (`cargo test -p wago-sandbox --test sandbox media::` runs one).

mod support;

mod app_state;
mod background;
mod cli;
mod control;
mod directory;
mod load;
mod media;
mod messages;
mod mock;
mod pair_code;
mod pairing;
mod plain_client;
mod presence;
mod profile;
mod robustness;
mod state;
mod tokens;
mod unlink;
