//! Real hypervisor-host drivers: guests and volumes through libvirt ([`libvirt`]), bridges
//! through netlink ([`netlink`]). Every libvirt call runs on the blocking pool, never on the
//! async executor. Specs are checked against the host before anything is touched, and only
//! objects Ferric made or the operator listed are changed ([`owned`]).

pub mod libvirt;
pub mod netlink;
pub mod owned;
