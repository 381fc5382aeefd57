//! One function per command, grouped by what they operate on; each turns
//! its arguments into management API calls and prints the outcome.

pub(crate) mod cluster;
pub(crate) mod definitions;
pub(crate) mod lists;
pub(crate) mod permissions;
pub(crate) mod queues;
pub(crate) mod retained;
pub(crate) mod status;
pub(crate) mod users;
pub(crate) mod vhosts;
