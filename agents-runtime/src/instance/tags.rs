//! Connection tags: the rules of `getConnectionTags` / `acceptWebSocket(ws, tags)`.
//!
//! The connection id is always the first tag; at most 9 user tags follow (10 in all), each a
//! non-empty string of at most 256 characters (counted in UTF-16 code units, as JavaScript
//! counts them). A user tag equal to the id is not repeated. Messages are Cloudflare's.

use std::sync::Arc;

/// Most tags a connection can carry, the id included.
pub const MAX_TAGS: usize = 10;
/// Longest tag, in UTF-16 code units.
pub const MAX_TAG_LEN: usize = 256;

/// Builds the full tag list `[id, ...user tags]`, or the rule the user tags break.
pub(crate) fn prepare(id: &Arc<str>, user_tags: Vec<String>) -> Result<Box<[Arc<str>]>, String> {
    let mut tags: Vec<Arc<str>> = Vec::with_capacity(user_tags.len() + 1);
    tags.push(id.clone());
    for tag in user_tags {
        if *tag == **id {
            continue;
        }
        if tag.is_empty() {
            return Err("A connection tag must not be an empty string.".into());
        }
        if utf16_len(&tag) > MAX_TAG_LEN {
            return Err(format!("A connection tag must not exceed {MAX_TAG_LEN} characters"));
        }
        tags.push(tag.into());
    }
    if tags.len() > MAX_TAGS {
        return Err(format!(
            "A connection can only have {MAX_TAGS} tags, including the default id tag."
        ));
    }
    Ok(tags.into_boxed_slice())
}

/// Length as JavaScript's `String.prototype.length` counts it.
pub(crate) fn utf16_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(tags: &[&str]) -> Vec<String> {
        tags.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn id_comes_first_and_is_not_repeated() {
        let id: Arc<str> = "abc".into();
        let tags = prepare(&id, user(&["admin", "abc", "x"])).expect("valid");
        let tags: Vec<&str> = tags.iter().map(|t| &**t).collect();
        assert_eq!(tags, ["abc", "admin", "x"]);
    }

    #[test]
    fn nine_user_tags_are_allowed_ten_are_not() {
        let id: Arc<str> = "id".into();
        let nine: Vec<String> = (0..9).map(|i| format!("t{i}")).collect();
        assert_eq!(prepare(&id, nine.clone()).expect("nine fit").len(), 10);
        let mut ten = nine;
        ten.push("t9".into());
        assert_eq!(
            prepare(&id, ten).unwrap_err(),
            "A connection can only have 10 tags, including the default id tag."
        );
    }

    #[test]
    fn empty_and_long_tags_are_rejected() {
        let id: Arc<str> = "id".into();
        assert_eq!(
            prepare(&id, user(&[""])).unwrap_err(),
            "A connection tag must not be an empty string."
        );
        assert!(prepare(&id, vec!["a".repeat(256)]).is_ok());
        assert_eq!(
            prepare(&id, vec!["a".repeat(257)]).unwrap_err(),
            "A connection tag must not exceed 256 characters"
        );
        // 128 astral characters are 256 UTF-16 units; one more is over.
        assert!(prepare(&id, vec!["😀".repeat(128)]).is_ok());
        assert!(prepare(&id, vec!["😀".repeat(129)]).is_err());
    }

    mod properties {
        use std::sync::Arc;

        use proptest::prelude::*;

        use super::super::{MAX_TAG_LEN, MAX_TAGS, prepare, utf16_len};

        proptest! {
            /// Any tags a hook returns are taken exactly when they follow the rules: the id
            /// first and not repeated, none empty or over the length, at most the count.
            #[test]
            fn tags_are_taken_exactly_when_they_follow_the_rules(
                tags in proptest::collection::vec(prop_oneof![Just(String::new()), Just("id".to_owned()), ".{0,300}"], 0..12),
            ) {
                let id: Arc<str> = "id".into();
                let kept: Vec<&String> = tags.iter().filter(|tag| tag.as_str() != "id").collect();
                let valid = kept.iter().all(|tag| !tag.is_empty() && utf16_len(tag) <= MAX_TAG_LEN)
                    && kept.len() < MAX_TAGS;
                match prepare(&id, tags.clone()) {
                    Ok(prepared) => {
                        prop_assert!(valid);
                        prop_assert_eq!(&*prepared[0], "id");
                        prop_assert_eq!(prepared.len(), kept.len() + 1);
                    }
                    Err(_) => prop_assert!(!valid),
                }
            }
        }
    }
}
