//! Real hypervisor-host drivers: guests and volumes through libvirt ([`libvirt`]), bridges
//! through netlink ([`netlink`]). Every libvirt call runs on the blocking pool, never on the
//! async executor. Specs are checked against the host before anything is touched.

pub mod libvirt;
pub mod netlink;

/// Escapes text for an XML attribute or element.
pub(crate) fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}
