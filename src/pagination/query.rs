//! Reading a query string for pagination parameters, on the request path: one pass over
//! its bytes, no allocation. Keys and values are percent-decoded byte by byte as they are
//! compared or parsed (`%XX` is that byte, `+` a space, a `%` not followed by two hex
//! digits itself), so `li%6Dit=%32%30` is `limit=20` and `page%5Bsize%5D` is `page[size]`.
//!
//! - pairs are separated by `&`; a key without `=` has an empty value;
//! - a repeated parameter counts once, its first occurrence, as Go's `url.Values.Get` and
//!   the servlet `getParameter` read it;
//! - a value is valid when it is one or more ASCII digits and nothing else: no sign, no
//!   space, no decimal point; an empty value is invalid, not absent;
//! - numbers saturate at [`MAX_VALUE`] (digits beyond it change nothing), so a thousand
//!   digits are read in a thousand steps and never overflow.

use super::{MAX_VALUE, Params, Reading};

/// What one parameter said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value {
    Number(u64),
    Invalid,
}

/// What `query` (raw, without the `?`) says about the pagination parameters `params`.
pub fn read(params: &Params, query: &[u8]) -> Reading {
    let mut page = None;
    let mut sizes: [Option<Value>; 2] = [None; 2];
    let mut offset = None;
    for pair in query.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (key, value) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        let slot = if is_key(key, params.page()) {
            &mut page
        } else if is_key(key, params.offset()) {
            &mut offset
        } else if let Some(i) = params.sizes().position(|name| is_key(key, name)) {
            match sizes.get_mut(i) {
                Some(slot) => slot,
                None => continue,
            }
        } else {
            continue;
        };
        if slot.is_none() {
            *slot = Some(number(value));
        }
    }
    let size = sizes.into_iter().flatten().next();
    reading(page, size, offset)
}

/// The reading of the three parameters' values.
fn reading(page: Option<Value>, size: Option<Value>, offset: Option<Value>) -> Reading {
    let given = [page, size, offset];
    if given.iter().all(Option::is_none) {
        return Reading::Absent;
    }
    if given.contains(&Some(Value::Invalid)) || page == Some(Value::Number(0)) {
        return Reading::Invalid;
    }
    let n = |v: Option<Value>| match v {
        Some(Value::Number(n)) => Some(n),
        _ => None,
    };
    let (page, size, offset) = (n(page), n(size), n(offset));
    let offset = match (offset, page, size) {
        (Some(offset), _, _) => Some(offset),
        // The first page, whatever its size; or a size alone: the first page too.
        (None, Some(1) | None, _) => Some(0),
        (None, Some(page), Some(size)) => Some((page - 1).saturating_mul(size).min(MAX_VALUE)),
        (None, Some(_), None) => None,
    };
    Reading::Paginated { size, offset }
}

/// Whether the raw `key` decodes to `name`.
fn is_key(key: &[u8], name: &str) -> bool {
    Decoded(key).eq(name.bytes())
}

/// The number in the raw `value`, saturating at [`MAX_VALUE`].
fn number(value: &[u8]) -> Value {
    let mut n: u64 = 0;
    let mut digits = 0usize;
    for b in Decoded(value) {
        if !b.is_ascii_digit() {
            return Value::Invalid;
        }
        digits += 1;
        n = n
            .saturating_mul(10)
            .saturating_add(u64::from(b - b'0'))
            .min(MAX_VALUE);
    }
    if digits == 0 {
        Value::Invalid
    } else {
        Value::Number(n)
    }
}

/// The bytes of a raw query component, percent-decoded (and `+` as a space) as they are
/// read.
struct Decoded<'a>(&'a [u8]);

impl Iterator for Decoded<'_> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        match (first, rest) {
            (b'%', [hi, lo, tail @ ..]) if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() => {
                self.0 = tail;
                Some(hex(*hi) << 4 | hex(*lo))
            }
            (b'+', _) => {
                self.0 = rest;
                Some(b' ')
            }
            _ => {
                self.0 = rest;
                Some(first)
            }
        }
    }
}

/// The value of an ASCII hex digit (checked by the caller).
fn hex(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        b'A'..=b'F' => digit - b'A' + 10,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Params {
        Params::new(None, None, None).expect("defaults")
    }

    fn paginated(size: Option<u64>, offset: Option<u64>) -> Reading {
        Reading::Paginated { size, offset }
    }

    fn read(query: &str) -> Reading {
        defaults().read(Some(query))
    }

    #[test]
    fn absent_when_no_parameter_is_there() {
        let p = defaults();
        assert_eq!(p.read(None), Reading::Absent);
        for query in [
            "",
            "&",
            "&&",
            "q=shoes",
            "pages=2",
            "xlimit=10",
            "Page=2",
            "=3",
        ] {
            assert_eq!(read(query), Reading::Absent, "{query:?}");
        }
    }

    #[test]
    fn page_and_size_give_the_offset_of_a_one_based_page() {
        assert_eq!(read("page=3&limit=20"), paginated(Some(20), Some(40)));
        assert_eq!(read("limit=20&page=3"), paginated(Some(20), Some(40)));
        assert_eq!(read("page=1&limit=50"), paginated(Some(50), Some(0)));
        assert_eq!(
            read("page=1"),
            paginated(None, Some(0)),
            "page 1 is offset 0"
        );
        assert_eq!(read("page=2"), paginated(None, None), "no size: no offset");
        assert_eq!(read("size=25"), paginated(Some(25), Some(0)), "first page");
        assert_eq!(read("limit=0"), paginated(Some(0), Some(0)));
        assert_eq!(
            read("q=a&page=4&size=10&sort=x"),
            paginated(Some(10), Some(30))
        );
    }

    #[test]
    fn an_offset_wins_over_the_page() {
        assert_eq!(read("offset=500&limit=50"), paginated(Some(50), Some(500)));
        assert_eq!(read("offset=7"), paginated(None, Some(7)));
        assert_eq!(
            read("page=9&limit=10&offset=20"),
            paginated(Some(10), Some(20))
        );
    }

    #[test]
    fn limit_is_preferred_to_size() {
        assert_eq!(read("size=10&limit=30"), paginated(Some(30), Some(0)));
        assert_eq!(
            read("size=x&limit=30"),
            paginated(Some(30), Some(0)),
            "size is not read when limit is there"
        );
        assert_eq!(read("limit=x&size=30"), Reading::Invalid);
    }

    #[test]
    fn anything_but_digits_is_invalid() {
        for query in [
            "page=abc",
            "page=",
            "page",
            "limit=-1",
            "limit=+5",
            "limit=1.5",
            "limit=1e3",
            "limit= 5",
            "limit=5%20",
            "limit=%",
            "limit=0x10",
            "page=0&limit=10",
            "page=00",
            "offset=ten&page=1",
            "page=2&limit=%FF",
        ] {
            assert_eq!(read(query), Reading::Invalid, "{query:?}");
        }
        assert_eq!(read("page=007&limit=010"), paginated(Some(10), Some(60)));
    }

    #[test]
    fn huge_numbers_saturate() {
        let huge = "9".repeat(1000);
        assert_eq!(
            read(&format!("limit={huge}")),
            paginated(Some(MAX_VALUE), Some(0))
        );
        assert_eq!(
            read("offset=18446744073709551616"),
            paginated(None, Some(MAX_VALUE)),
            "2^64"
        );
        assert_eq!(
            read("page=4294967295&limit=4294967295"),
            paginated(Some(MAX_VALUE), Some(MAX_VALUE)),
            "the product saturates too"
        );
        assert_eq!(
            read("page=4294967296&limit=1"),
            paginated(Some(1), Some(MAX_VALUE - 1)),
            "a page past the cap is the cap"
        );
    }

    #[test]
    fn keys_and_values_are_percent_decoded() {
        assert_eq!(
            read("li%6Dit=%32%30&page=%33"),
            paginated(Some(20), Some(40))
        );
        assert_eq!(
            read("LI%6dIT=20"),
            Reading::Absent,
            "names are case-sensitive"
        );
        let bracketed = Params::new(Some("page[number]"), Some("page[size]"), None).expect("valid");
        for query in [
            "page[number]=2&page[size]=25",
            "page%5Bnumber%5D=2&page%5bsize%5d=25",
        ] {
            assert_eq!(
                bracketed.read(Some(query)),
                paginated(Some(25), Some(25)),
                "{query}"
            );
        }
        let spaced = Params::new(Some("p"), None, None).expect("valid");
        assert_eq!(spaced.read(Some("p+=2")), Reading::Absent, "'+' is a space");
        assert_eq!(
            read("page=%2"),
            Reading::Invalid,
            "a truncated escape is itself"
        );
    }

    #[test]
    fn a_repeated_parameter_counts_its_first_occurrence() {
        assert_eq!(
            read("limit=10&limit=1000&page=2"),
            paginated(Some(10), Some(10))
        );
        assert_eq!(read("page=2&page=abc&limit=5"), paginated(Some(5), Some(5)));
        assert_eq!(read("page=abc&page=2&limit=5"), Reading::Invalid);
    }

    #[test]
    fn configured_names_replace_the_defaults() {
        let p = Params::new(Some("p"), Some("per_page"), Some("skip")).expect("valid");
        assert_eq!(
            p.read(Some("p=3&per_page=10")),
            paginated(Some(10), Some(20))
        );
        assert_eq!(
            p.read(Some("skip=40&per_page=10")),
            paginated(Some(10), Some(40))
        );
        assert_eq!(p.read(Some("page=3&limit=10")), Reading::Absent);
        let only_size = Params::new(None, Some("count"), None).expect("valid");
        assert_eq!(only_size.read(Some("limit=5")), Reading::Absent);
        assert_eq!(
            only_size.read(Some("page=2&count=5")),
            paginated(Some(5), Some(5))
        );
    }
}
