//! Pagination of a route's listings: which query parameters carry the page number, the
//! page size and the offset ([`Params`]), what a request's query says about them
//! ([`Reading`], found by [`query`] in one pass without allocating), and the fixed buckets
//! and ranges every figure is counted in. Shared: the proxy reads queries and records
//! them, the summary, the rules and the dashboard name the same ranges.
//!
//! Pages are 1-based: page `p` of size `s` starts at offset `(p − 1) × s`, and page 0 is
//! no page (the request counts as invalid). An offset parameter is the offset as given,
//! and wins over a page. A request with a size but neither page nor offset asks for the
//! first page (offset 0), as does page 1 whatever its size; a page above 1 without a size
//! has no known offset. Values are whole decimal numbers; larger than [`MAX_VALUE`] they
//! saturate to it, so no query can overflow a count or a sum. docs/pagination.md says the
//! same for users.

pub mod query;

use thiserror::Error;

/// Upper boundaries of the page-size histogram (`routemeter_pagination_page_size`), in
/// items: the sizes APIs commonly offer, so a size is counted in the bucket of its own
/// value (`le` is inclusive).
pub const PAGE_SIZE_BOUNDS: [u64; 7] = [10, 20, 50, 100, 200, 500, 1000];

/// The `page_size_range` label of each page-size bucket, in order: the sizes it holds.
pub const PAGE_SIZE_RANGES: [&str; 8] = [
    "0-10", "11-20", "21-50", "51-100", "101-200", "201-500", "501-1000", "1001+",
];

/// Upper boundaries of the offset histogram (`routemeter_pagination_offset`), in items
/// skipped. Offsets are whole numbers, so `le="99"` counts those below 100: each bucket is
/// exactly one range of [`OFFSET_RANGES`], the first page (offset 0) a bucket of its own.
pub const OFFSET_BOUNDS: [u64; 5] = [0, 99, 999, 9_999, 99_999];

/// The `offset_range` label of each offset bucket, in order.
pub const OFFSET_RANGES: [&str; 6] = [
    "0",
    "1-99",
    "100-999",
    "1000-9999",
    "10000-99999",
    "100000+",
];

/// The first offset of each range of [`OFFSET_RANGES`].
pub const OFFSET_RANGE_STARTS: [u64; 6] = [0, 1, 100, 1_000, 10_000, 100_000];

/// Offsets from here on are deep pages: the summary's recommendation looks at them, and
/// the deep-pages alert by default (`monitoring.alerts.deepPages.minOffset`).
pub const DEEP_OFFSET: u64 = 1_000;

/// Page sizes above this are large pages: the summary recommends capping them when more
/// than [`crate::summary::score::LARGE_PAGE_RECOMMENDATION_RATIO`] of the requests ask
/// for one. A bucket boundary, so the share is exact.
pub const LARGE_PAGE_SIZE: u64 = 100;

/// The largest value counted (2³² − 1): larger page numbers, sizes, offsets and products
/// saturate to it. Far beyond every bucket, it keeps the sums of a window from
/// overflowing before its 32-bit counts would.
pub const MAX_VALUE: u64 = u32::MAX as u64;

/// The default name of the page-number parameter.
pub const DEFAULT_PAGE_PARAM: &str = "page";
/// The default names of the page-size parameter: `limit`, else `size` (read only when the
/// query has no `limit`).
pub const DEFAULT_SIZE_PARAMS: [&str; 2] = ["limit", "size"];
/// The default name of the offset parameter.
pub const DEFAULT_OFFSET_PARAM: &str = "offset";

/// The longest parameter name accepted.
pub const MAX_PARAM_LEN: usize = 64;

/// The index of the page-size bucket (and range) of `size`.
pub fn page_size_range(size: u64) -> usize {
    PAGE_SIZE_BOUNDS.partition_point(|b| *b < size)
}

/// The index of the offset bucket (and range) of `offset`.
pub fn offset_range(offset: u64) -> usize {
    OFFSET_BOUNDS.partition_point(|b| *b < offset)
}

/// The offset ranges starting at `min_offset` or above (the deep ones); the last range
/// when `min_offset` is beyond every start.
pub fn ranges_from(min_offset: u64) -> &'static [&'static str] {
    let first = OFFSET_RANGE_STARTS
        .iter()
        .position(|start| *start >= min_offset)
        .unwrap_or(OFFSET_RANGES.len() - 1);
    &OFFSET_RANGES[first..]
}

/// What a request's query says about pagination: the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// At least one parameter, every one a valid number.
    Paginated,
    /// None of the parameters.
    Absent,
    /// A parameter that is not a whole number (or empty), or page 0.
    Invalid,
}

impl Outcome {
    /// Every outcome, in the order counts are kept.
    pub const ALL: [Outcome; 3] = [Outcome::Paginated, Outcome::Absent, Outcome::Invalid];

    /// The `outcome` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Paginated => "paginated",
            Outcome::Absent => "absent",
            Outcome::Invalid => "invalid",
        }
    }

    /// The position of the outcome in [`Outcome::ALL`].
    pub fn index(self) -> usize {
        match self {
            Outcome::Paginated => 0,
            Outcome::Absent => 1,
            Outcome::Invalid => 2,
        }
    }
}

/// What one request's query says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// None of the parameters is in the query.
    Absent,
    /// A parameter is not a whole number, or the page is 0.
    Invalid,
    /// Valid parameters: the page size when the query gives one, the offset when it
    /// follows from them.
    Paginated {
        size: Option<u64>,
        offset: Option<u64>,
    },
}

impl Reading {
    /// The request's outcome.
    pub fn outcome(self) -> Outcome {
        match self {
            Reading::Absent => Outcome::Absent,
            Reading::Invalid => Outcome::Invalid,
            Reading::Paginated { .. } => Outcome::Paginated,
        }
    }
}

/// Which parameter a [`ParamError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    Page,
    Size,
    Offset,
}

impl Param {
    /// The field naming it in a route's `pagination`.
    pub fn field(self) -> &'static str {
        match self {
            Param::Page => "pageParam",
            Param::Size => "sizeParam",
            Param::Offset => "offsetParam",
        }
    }

    /// The parameter in words, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Param::Page => "page",
            Param::Size => "page-size",
            Param::Offset => "offset",
        }
    }
}

/// Why a route's pagination parameters were rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParamError {
    #[error(
        "{name:?} is not a query parameter name: 1 to {MAX_PARAM_LEN} letters, digits or '-', '_', '.', '~', '[', ']'"
    )]
    BadName { param: Param, name: String },
    #[error("{name:?} is also the {other} parameter")]
    Shared {
        param: Param,
        name: String,
        other: &'static str,
    },
}

impl ParamError {
    /// The parameter at fault.
    pub fn param(&self) -> Param {
        match self {
            ParamError::BadName { param, .. } | ParamError::Shared { param, .. } => *param,
        }
    }
}

/// The names of a route's pagination parameters, compiled from its config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    page: Box<str>,
    /// One name, or the two defaults (`size` read only without `limit`).
    sizes: Box<[Box<str>]>,
    offset: Box<str>,
}

impl Params {
    /// The parameters of a route, each a configured name or the default. Names are
    /// matched exactly (case-sensitive) against the decoded keys of a query, so
    /// `page[size]` matches `page%5Bsize%5D` too.
    pub fn new(
        page: Option<&str>,
        size: Option<&str>,
        offset: Option<&str>,
    ) -> Result<Self, ParamError> {
        for (param, name) in [
            (Param::Page, page),
            (Param::Size, size),
            (Param::Offset, offset),
        ] {
            if let Some(name) = name.filter(|n| !is_param_name(n)) {
                return Err(ParamError::BadName {
                    param,
                    name: name.to_string(),
                });
            }
        }
        let params = Params {
            page: page.unwrap_or(DEFAULT_PAGE_PARAM).into(),
            sizes: match size {
                Some(name) => Box::new([name.into()]),
                None => DEFAULT_SIZE_PARAMS.iter().map(|n| Box::from(*n)).collect(),
            },
            offset: offset.unwrap_or(DEFAULT_OFFSET_PARAM).into(),
        };
        // Every name with its parameter and whether it was configured: a name shared by
        // two parameters is blamed on the configured one (the later when both were).
        let mut names = vec![(Param::Page, &*params.page, page.is_some())];
        names.extend(
            params
                .sizes
                .iter()
                .map(|n| (Param::Size, &**n, size.is_some())),
        );
        names.push((Param::Offset, &*params.offset, offset.is_some()));
        for (i, later) in names.iter().enumerate() {
            for earlier in &names[..i] {
                if later.1 == earlier.1 && later.0 != earlier.0 {
                    let (blamed, other) = if later.2 || !earlier.2 {
                        (later, earlier)
                    } else {
                        (earlier, later)
                    };
                    return Err(ParamError::Shared {
                        param: blamed.0,
                        name: blamed.1.to_string(),
                        other: other.0.describe(),
                    });
                }
            }
        }
        Ok(params)
    }

    /// What `query` (the raw query of a request target, without `?`) says; see
    /// [`query::read`].
    pub fn read(&self, query: Option<&str>) -> Reading {
        query::read(self, query.unwrap_or_default().as_bytes())
    }

    /// The page-number parameter's name.
    pub fn page(&self) -> &str {
        &self.page
    }

    /// The page-size parameter's names, in order of preference.
    pub fn sizes(&self) -> impl Iterator<Item = &str> {
        self.sizes.iter().map(|s| &**s)
    }

    /// The offset parameter's name.
    pub fn offset(&self) -> &str {
        &self.offset
    }
}

/// Whether `name` can name a query parameter: unreserved URL characters and the brackets
/// of `page[size]`-style names, at most [`MAX_PARAM_LEN`].
pub fn is_param_name(name: &str) -> bool {
    (1..=MAX_PARAM_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~[]".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_offsets_fall_in_their_documented_ranges() {
        for (size, range) in [
            (0, "0-10"),
            (10, "0-10"),
            (11, "11-20"),
            (20, "11-20"),
            (50, "21-50"),
            (100, "51-100"),
            (101, "101-200"),
            (500, "201-500"),
            (1000, "501-1000"),
            (1001, "1001+"),
            (MAX_VALUE, "1001+"),
        ] {
            assert_eq!(
                PAGE_SIZE_RANGES[page_size_range(size)],
                range,
                "size {size}"
            );
        }
        for (offset, range) in [
            (0, "0"),
            (1, "1-99"),
            (99, "1-99"),
            (100, "100-999"),
            (999, "100-999"),
            (1000, "1000-9999"),
            (99_999, "10000-99999"),
            (100_000, "100000+"),
            (MAX_VALUE, "100000+"),
        ] {
            assert_eq!(
                OFFSET_RANGES[offset_range(offset)],
                range,
                "offset {offset}"
            );
        }
        // Every range starts where its bucket does.
        for (i, start) in OFFSET_RANGE_STARTS.iter().enumerate() {
            assert_eq!(offset_range(*start), i);
        }
        assert_eq!(PAGE_SIZE_RANGES.len(), PAGE_SIZE_BOUNDS.len() + 1);
        assert_eq!(OFFSET_RANGES.len(), OFFSET_BOUNDS.len() + 1);
    }

    #[test]
    fn deep_ranges_start_at_the_minimum_offset() {
        assert_eq!(
            ranges_from(DEEP_OFFSET),
            ["1000-9999", "10000-99999", "100000+"]
        );
        assert_eq!(ranges_from(100_000), ["100000+"]);
        assert_eq!(ranges_from(500), ["1000-9999", "10000-99999", "100000+"]);
        assert_eq!(ranges_from(u64::MAX), ["100000+"]);
    }

    #[test]
    fn names_are_checked_and_never_shared() {
        let p = Params::new(None, None, None).expect("defaults");
        assert_eq!(
            (p.page(), p.sizes().collect::<Vec<_>>(), p.offset()),
            ("page", vec!["limit", "size"], "offset")
        );
        let p = Params::new(Some("p"), Some("page[size]"), Some("skip")).expect("valid");
        assert_eq!(p.sizes().collect::<Vec<_>>(), ["page[size]"]);
        for bad in ["", "a b", "a&b", "a=b", "a%20", "é", &"x".repeat(65)] {
            let err = Params::new(None, Some(bad), None).expect_err(bad);
            assert_eq!(err.param(), Param::Size, "{bad:?}");
        }
        let err = Params::new(None, Some("page"), None).expect_err("shared");
        assert_eq!(err.param(), Param::Size);
        assert_eq!(err.to_string(), "\"page\" is also the page parameter");
        let err = Params::new(Some("limit"), None, None).expect_err("shared");
        assert_eq!(err.param(), Param::Page);
        assert_eq!(err.to_string(), "\"limit\" is also the page-size parameter");
        let err = Params::new(None, None, Some("page")).expect_err("shared");
        assert_eq!(err.param(), Param::Offset);
        assert!(Params::new(Some("limit"), Some("per_page"), None).is_ok());
    }
}
