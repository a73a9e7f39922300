//! The checked-in capability list, and the check that a backend declares exactly it.

use crate::Capabilities;

use super::{Backend, CaseFailure};

/// The field names of [`Capabilities`], in the list's spelling.
const FIELDS: [&str; 5] = [
    "per_key_ordering",
    "persistent",
    "backlog_for_new_groups",
    "delayed_retry",
    "attempt_count",
];

fn get(caps: &Capabilities, field: &str) -> bool {
    match field {
        "per_key_ordering" => caps.per_key_ordering,
        "persistent" => caps.persistent,
        "backlog_for_new_groups" => caps.backlog_for_new_groups,
        "delayed_retry" => caps.delayed_retry,
        _ => caps.attempt_count,
    }
}

fn set(caps: &mut Capabilities, field: &str, value: bool) {
    match field {
        "per_key_ordering" => caps.per_key_ordering = value,
        "persistent" => caps.persistent = value,
        "backlog_for_new_groups" => caps.backlog_for_new_groups = value,
        "delayed_retry" => caps.delayed_retry = value,
        _ => caps.attempt_count = value,
    }
}

/// Reads `backend`'s expected capabilities from a checked-in list.
///
/// The list is a small TOML subset: one `[backend]` table per backend, each with every
/// capability field set to `true` or `false`, and `#` comments. A missing table, a missing
/// or unknown field, or any other line is an error, so the list cannot drift silently from
/// [`Capabilities`].
///
/// ```
/// use meshwork_event_bus::conformance::expected_capabilities;
///
/// let list = "
/// [memory]
/// per_key_ordering = true
/// persistent = false
/// backlog_for_new_groups = true
/// delayed_retry = true
/// attempt_count = true
/// ";
/// let caps = expected_capabilities(list, "memory")?;
/// assert!(caps.per_key_ordering && !caps.persistent);
/// assert!(expected_capabilities(list, "kafka").is_err());
/// # Ok::<(), meshwork_event_bus::conformance::CaseFailure>(())
/// ```
pub fn expected_capabilities(list: &str, backend: &str) -> Result<Capabilities, CaseFailure> {
    let mut caps = Capabilities {
        per_key_ordering: false,
        persistent: false,
        backlog_for_new_groups: false,
        delayed_retry: false,
        attempt_count: false,
    };
    let mut seen: Vec<&str> = Vec::new();
    let mut in_table = false;
    let mut found = false;
    for (n, raw) in list.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let bad =
            |why: &str| CaseFailure::new(format!("capability list line {}: {why}: {raw:?}", n + 1));
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_table = name.trim() == backend;
            if in_table {
                if found {
                    return Err(bad("the backend's table appears twice"));
                }
                found = true;
            }
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| bad("expected `[backend]` or `field = true|false`"))?;
        let (key, value) = (key.trim(), value.trim());
        let value = match value {
            "true" => true,
            "false" => false,
            _ => return Err(bad("the value must be `true` or `false`")),
        };
        let Some(field) = FIELDS.iter().find(|f| **f == key) else {
            return Err(bad(&format!(
                "unknown capability `{key}` (known: {})",
                FIELDS.join(", ")
            )));
        };
        if in_table {
            if seen.contains(field) {
                return Err(bad("field set twice"));
            }
            seen.push(field);
            set(&mut caps, field, value);
        }
    }
    if !found {
        return Err(CaseFailure::new(format!(
            "the capability list has no `[{backend}]` table: add one with every field of Capabilities"
        )));
    }
    let missing: Vec<&str> = FIELDS
        .iter()
        .copied()
        .filter(|f| !seen.contains(f))
        .collect();
    if !missing.is_empty() {
        return Err(CaseFailure::new(format!(
            "the capability list's `[{backend}]` table lacks {}",
            missing.join(", ")
        )));
    }
    Ok(caps)
}

/// Checks that `backend` declares exactly the capabilities the checked-in `list` expects
/// for it (see [`expected_capabilities`]), and prints the cases its capabilities skip.
///
/// Declaring less than the list would let a backend skip cases; declaring more without
/// updating the list would hide a change of guarantee from review. Both fail.
///
/// ```
/// use meshwork_event_bus::conformance::{MemoryBackend, check_capabilities};
///
/// let list = "[memory]\nper_key_ordering = true\npersistent = false\n\
///             backlog_for_new_groups = true\ndelayed_retry = true\nattempt_count = true\n";
/// check_capabilities(&MemoryBackend::new(), list)?;
/// # Ok::<(), meshwork_event_bus::conformance::CaseFailure>(())
/// ```
pub fn check_capabilities<B: Backend>(backend: &B, list: &str) -> Result<(), CaseFailure> {
    let name = backend.name();
    let expected = expected_capabilities(list, name)?;
    let declared = backend.capabilities();
    let wrong: Vec<String> = FIELDS
        .iter()
        .filter(|f| get(&declared, f) != get(&expected, f))
        .map(|f| {
            format!(
                "{f} = {} but the list expects {}",
                get(&declared, f),
                get(&expected, f)
            )
        })
        .collect();
    if !wrong.is_empty() {
        return Err(CaseFailure::new(format!(
            "backend `{name}` declares {}: a backend must not pass the suite by declaring less; \
             fix the backend, or if its guarantee really changed, the checked-in list",
            wrong.join(", ")
        )));
    }
    for (case, why) in skipped_cases(&declared) {
        let line = format!("SKIPPED by capability on backend `{name}`: `{case}` {why}");
        eprintln!("{line}");
    }
    Ok(())
}

/// The cases, or parts of cases, that `caps` skips, each with the reason.
///
/// ```
/// use meshwork_event_bus::MemoryBus;
/// use meshwork_event_bus::conformance::skipped_cases;
///
/// let skipped = skipped_cases(&MemoryBus::capabilities());
/// assert_eq!(skipped.len(), 1);
/// assert_eq!(skipped[0].0, "survives_a_broker_restart");
/// ```
pub fn skipped_cases(caps: &Capabilities) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    if !caps.persistent {
        out.push((
            "survives_a_broker_restart",
            "needs `persistent` (messages survive a broker restart)",
        ));
    }
    if !caps.backlog_for_new_groups {
        out.push((
            "new_group_reads_the_backlog",
            "needs `backlog_for_new_groups`",
        ));
    }
    if !caps.delayed_retry {
        out.push((
            "delayed_retry_is_not_early_and_other_keys_flow",
            "needs `delayed_retry`",
        ));
    }
    if !caps.per_key_ordering {
        out.push((
            "per_key_order_under_several_consumers",
            "needs `per_key_ordering`",
        ));
        out.push((
            "poison_message_dead_lettered_does_not_block",
            "checks key order only with `per_key_ordering`",
        ));
    }
    if !caps.attempt_count {
        out.push((
            "retry_redelivers_with_attempt_plus_one (and every attempt check)",
            "checks broker attempt counts only with `attempt_count`",
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = "# comment\n[memory]\nper_key_ordering = true # yes\npersistent = false\n\
        backlog_for_new_groups = true\ndelayed_retry = true\nattempt_count = true\n\n\
        [other]\npersistent = true\n";

    #[test]
    fn reads_one_table_and_ignores_the_others() {
        let caps = expected_capabilities(LIST, "memory").unwrap();
        assert!(caps.per_key_ordering && !caps.persistent && caps.attempt_count);
    }

    #[test]
    fn a_table_lacking_fields_is_an_error() {
        let err = expected_capabilities(LIST, "other").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the capability list's `[other]` table lacks per_key_ordering, backlog_for_new_groups, delayed_retry, attempt_count"
        );
    }

    #[test]
    fn typos_and_bad_values_are_errors() {
        let err = expected_capabilities("[memory]\npersistant = true\n", "memory").unwrap_err();
        assert!(
            err.to_string().contains("unknown capability `persistant`"),
            "{err}"
        );
        let err = expected_capabilities("[memory]\npersistent = yes\n", "memory").unwrap_err();
        assert!(err.to_string().contains("`true` or `false`"), "{err}");
        let err = expected_capabilities("[memory]\n[memory]\n", "memory").unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
        let err = expected_capabilities(LIST, "kafka").unwrap_err();
        assert!(err.to_string().contains("no `[kafka]` table"), "{err}");
    }
}
