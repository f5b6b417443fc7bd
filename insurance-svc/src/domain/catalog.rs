//! The catalogue of what the fund may pay for: drugs, treatment items and consumables, each
//! with its national coverage class and, where one is set, a price cap. Pure: no I/O but
//! reading the files it is loaded from.
//!
//! The national catalogue applies everywhere; a region may publish its own items and override
//! national ones (a local price cap for a treatment item, a regional consumable). An item is
//! looked up in the most specific book that has it: the region itself (`310115`), its
//! prefecture (`310100`), its province (`310000`), then the national book. Each book carries a
//! version, which every answer names, so that what a bill was priced against can be told later.
//!
//! Classes (the insurance law's drug list and treatment items): A is fully within the fund's
//! scope; B is within scope after the patient pays a set share first (the policy's B-class
//! self-pay share); C is outside the fund's scope (self-funded).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use medins_common::{ApiError, ApiResult, Reason};
use serde::Deserialize;

use super::account::is_region_code;

/// Longest item code (national drug codes have 20 characters, consumable codes 27).
pub const MAX_CODE_CHARS: usize = 40;
/// Longest item name.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest unit ("盒", "次", "支").
pub const MAX_UNIT_CHARS: usize = 16;
/// Longest catalogue version.
pub const MAX_VERSION_CHARS: usize = 32;
/// Longest name prefix a search accepts.
pub const MAX_NAME_PREFIX_CHARS: usize = MAX_NAME_CHARS;
/// A search's pages: 20 items unless asked, at most 100, larger requests refused.
pub const SEARCH_PAGE: medins_common::validate::PageSize =
    medins_common::validate::PageSize { default: 20, max: 100, cap: false };

/// What an item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum ItemKind {
    /// A drug of the national drug list.
    #[serde(rename = "DRUG")]
    Drug,
    /// A medical service: examination, treatment, nursing, a bed day.
    #[serde(rename = "TREATMENT")]
    Treatment,
    /// A medical consumable.
    #[serde(rename = "CONSUMABLE")]
    Consumable,
}

/// How much of an item is within the fund's scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
pub enum CoverageClass {
    /// Fully within scope.
    A,
    /// Within scope after the patient's set share.
    B,
    /// Outside scope: self-funded.
    C,
}

impl CoverageClass {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CoverageClass::A => "A",
            CoverageClass::B => "B",
            CoverageClass::C => "C",
        }
    }

    /// The class spelled `text` (as stored).
    pub fn parse(text: &str) -> Option<CoverageClass> {
        match text {
            "A" => Some(CoverageClass::A),
            "B" => Some(CoverageClass::B),
            "C" => Some(CoverageClass::C),
            _ => None,
        }
    }
}

medins_common::text_enum_sql!(CoverageClass);

/// One item of a book.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogItem {
    /// The national (or regional) item code.
    pub code: String,
    /// The item's name as published.
    pub name: String,
    /// Drug, treatment item or consumable.
    pub kind: ItemKind,
    /// Coverage class.
    pub class: CoverageClass,
    /// The unit a quantity counts.
    pub unit: String,
    /// Most the fund recognises per unit, where a cap is set: a bill priced above it is refused.
    #[serde(default)]
    pub price_cap_cents: Option<i64>,
}

/// A catalogue file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// Unreadable file or folder.
    #[error("cannot read catalogue {path}: {source}")]
    Read {
        /// The file or folder.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML of the expected shape, or a value out of range.
    #[error("catalogue {file}: {problem}")]
    Invalid {
        /// Which book (`national` or a region code).
        file: String,
        /// What is wrong.
        problem: String,
    },
}

/// One published book: the national one or a region's.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Book {
    version: String,
    by_code: BTreeMap<String, CatalogItem>,
    /// (name, code) of every item, for name-prefix searches in name order.
    by_name: BTreeMap<(String, String), ()>,
}

/// A book as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BookFile {
    version: String,
    #[serde(default)]
    items: Vec<CatalogItem>,
}

fn printable(text: &str) -> bool {
    !text.trim().is_empty() && text.trim() == text && !text.chars().any(char::is_control)
}

/// Whether `text` can be an item code: 1-40 upper-case letters, digits, `-` or `.`.
pub fn is_item_code(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_CODE_CHARS
        && text.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

impl Book {
    fn parse(file: &str, text: &str) -> Result<Book, CatalogError> {
        let invalid = |problem: String| CatalogError::Invalid { file: file.to_owned(), problem };
        let parsed: BookFile = toml::from_str(text).map_err(|e| invalid(e.message().to_owned()))?;
        if !printable(&parsed.version) || parsed.version.chars().count() > MAX_VERSION_CHARS {
            return Err(invalid(format!("version must be 1-{MAX_VERSION_CHARS} printable characters")));
        }
        let mut book = Book { version: parsed.version, by_code: BTreeMap::new(), by_name: BTreeMap::new() };
        for item in parsed.items {
            let at = |what: &str| invalid(format!("item {:?}: {what}", item.code));
            if !is_item_code(&item.code) {
                return Err(at("code must be 1-40 upper-case letters, digits, '-' or '.'"));
            }
            if !printable(&item.name) || item.name.chars().count() > MAX_NAME_CHARS {
                return Err(at("name must be 1-100 printable characters"));
            }
            if !printable(&item.unit) || item.unit.chars().count() > MAX_UNIT_CHARS {
                return Err(at("unit must be 1-16 printable characters"));
            }
            if item.price_cap_cents.is_some_and(|cap| cap <= 0) {
                return Err(at("price_cap_cents must be positive"));
            }
            if book.by_code.contains_key(&item.code) {
                return Err(at("listed twice"));
            }
            book.by_name.insert((item.name.clone(), item.code.clone()), ());
            book.by_code.insert(item.code.clone(), item);
        }
        Ok(book)
    }
}

/// An item as found, with the book it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found<'a> {
    /// The item.
    pub item: &'a CatalogItem,
    /// The version of the book it came from.
    pub version: &'a str,
    /// The region whose book it came from; None for the national book.
    pub region: Option<&'a str>,
}

/// What a search matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// Items whose code starts with this, in code order.
    CodePrefix(String),
    /// Items whose name starts with this, in name order (then code).
    NamePrefix(String),
}

/// The national book and the regions' books.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    national: Book,
    regions: BTreeMap<String, Book>,
}

/// The built-in national book (`medins up` and tests): a few items of each kind and class.
/// Production deployments load the published catalogue (`--catalog-dir`).
pub const BUILTIN_NATIONAL_TOML: &str = r#"
version = "NATIONAL-2026-12"

[[items]]
code = "XJ01CAA040A001010101"
name = "阿莫西林胶囊"
kind = "DRUG"
class = "A"
unit = "盒"
price_cap_cents = 1800

[[items]]
code = "XM01AEB020A001010101"
name = "布洛芬缓释胶囊"
kind = "DRUG"
class = "A"
unit = "盒"
price_cap_cents = 2500

[[items]]
code = "XB05AAR040B002010101"
name = "人血白蛋白注射液"
kind = "DRUG"
class = "B"
unit = "瓶"
price_cap_cents = 45000

[[items]]
code = "XA11HAX001A001010101"
name = "复合维生素片"
kind = "DRUG"
class = "C"
unit = "瓶"

[[items]]
code = "110200001"
name = "普通门诊诊查费"
kind = "TREATMENT"
class = "A"
unit = "次"
price_cap_cents = 1000

[[items]]
code = "250101001"
name = "血常规检查"
kind = "TREATMENT"
class = "A"
unit = "次"
price_cap_cents = 2500

[[items]]
code = "210300001"
name = "计算机断层扫描(CT)"
kind = "TREATMENT"
class = "B"
unit = "次"
price_cap_cents = 30000

[[items]]
code = "C0301010010000000000000001"
name = "一次性使用无菌注射器"
kind = "CONSUMABLE"
class = "A"
unit = "支"
price_cap_cents = 200
"#;

/// The built-in book of one region (Shanghai, `310000`): a local price cap for a national
/// treatment item and a regional item, so that cross-region care has something to differ by.
pub const BUILTIN_REGION_310000_TOML: &str = r#"
version = "310000-2026-12"

[[items]]
code = "110200001"
name = "普通门诊诊查费"
kind = "TREATMENT"
class = "A"
unit = "次"
price_cap_cents = 1400

[[items]]
code = "310000-T-0001"
name = "中医针灸治疗"
kind = "TREATMENT"
class = "B"
unit = "次"
price_cap_cents = 6000
"#;

/// The national book's file name in a catalogue folder; region books are `<region code>.toml`.
pub const NATIONAL_FILE: &str = "national.toml";

impl Catalog {
    /// The built-in catalogue.
    pub fn builtin() -> Catalog {
        Catalog::from_books(BUILTIN_NATIONAL_TOML, [("310000", BUILTIN_REGION_310000_TOML)])
            .expect("the built-in catalogue is valid")
    }

    /// Parses and validates the national book's text and the regions' (region code, text).
    pub fn from_books<'a>(
        national: &str,
        regions: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Catalog, CatalogError> {
        let mut catalog = Catalog { national: Book::parse("national", national)?, regions: BTreeMap::new() };
        for (region, text) in regions {
            if !is_region_code(region) {
                return Err(CatalogError::Invalid {
                    file: region.to_owned(),
                    problem: "a region book is named by a six-digit region code".to_owned(),
                });
            }
            catalog.regions.insert(region.to_owned(), Book::parse(region, text)?);
        }
        Ok(catalog)
    }

    /// Loads a catalogue folder: `national.toml` and one `<region code>.toml` per region that
    /// publishes its own items. Any other file there is an error (a misnamed book must not be
    /// skipped silently).
    pub fn load_dir(dir: &Path) -> Result<Catalog, CatalogError> {
        let read = |path: &PathBuf| {
            std::fs::read_to_string(path)
                .map_err(|source| CatalogError::Read { path: path.display().to_string(), source })
        };
        let national = read(&dir.join(NATIONAL_FILE))?;
        let entries =
            std::fs::read_dir(dir).map_err(|source| CatalogError::Read { path: dir.display().to_string(), source })?;
        let mut regions = Vec::new();
        for entry in entries {
            let path = entry.map_err(|source| CatalogError::Read { path: dir.display().to_string(), source })?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name == NATIONAL_FILE {
                continue;
            }
            match name.strip_suffix(".toml") {
                Some(region) if is_region_code(region) => regions.push((region.to_owned(), read(&path)?)),
                _ => {
                    return Err(CatalogError::Invalid {
                        file: name,
                        problem: format!("expected {NATIONAL_FILE} or <six-digit region code>.toml"),
                    });
                }
            }
        }
        Catalog::from_books(&national, regions.iter().map(|(region, text)| (region.as_str(), text.as_str())))
    }

    /// The books that apply in `region` (None: the national book alone), most specific first.
    fn books<'a>(&'a self, region: Option<&str>) -> Vec<(Option<&'a str>, &'a Book)> {
        let mut books = Vec::with_capacity(4);
        if let Some(region) = region {
            let prefecture = format!("{}00", &region[..4]);
            let province = format!("{}0000", &region[..2]);
            for code in [region, prefecture.as_str(), province.as_str()] {
                if let Some((key, book)) = self.regions.get_key_value(code)
                    && !books.iter().any(|(seen, _)| *seen == Some(key.as_str()))
                {
                    books.push((Some(key.as_str()), book));
                }
            }
        }
        books.push((None, &self.national));
        books
    }

    /// The item `code` as it applies in `region` (None: nationally).
    pub fn lookup(&self, region: Option<&str>, code: &str) -> Option<Found<'_>> {
        self.books(region).into_iter().find_map(|(from, book)| {
            book.by_code.get(code).map(|item| Found { item, version: &book.version, region: from })
        })
    }

    /// Up to `limit` items matching `query` as they apply in `region`, after the item `after`
    /// (the code of the last item of the previous page), in the query's order. A regional item
    /// hides the national item of the same code.
    pub fn search(&self, region: Option<&str>, query: &Query, after: Option<&str>, limit: usize) -> Vec<Found<'_>> {
        let books = self.books(region);
        // Each book's first `limit` matches after the cursor that no more specific book
        // overrides: the first `limit` of their union is the first `limit` of the whole view.
        // A name search continues after the cursor item's (name, code), found once for every book.
        let name_cursor = match query {
            Query::NamePrefix(_) => {
                after.and_then(|code| self.lookup(region, code)).map(|f| (f.item.name.clone(), f.item.code.clone()))
            }
            Query::CodePrefix(_) => None,
        };
        let mut matches: BTreeMap<(String, String), Found<'_>> = BTreeMap::new();
        for (depth, (from, book)) in books.iter().enumerate() {
            let hidden = |code: &str| books[..depth].iter().any(|(_, nearer)| nearer.by_code.contains_key(code));
            let found = |code: &str| {
                let item = &book.by_code[code];
                Found { item, version: &book.version, region: *from }
            };
            match query {
                Query::CodePrefix(prefix) => {
                    let start = after.map_or(prefix.as_str(), |after| after.max(prefix.as_str()));
                    let codes = book
                        .by_code
                        .range::<str, _>((std::ops::Bound::Included(start), std::ops::Bound::Unbounded))
                        .map(|(code, _)| code.as_str())
                        .take_while(|code| code.starts_with(prefix.as_str()))
                        .filter(|code| Some(*code) != after && !hidden(code))
                        .take(limit);
                    for code in codes {
                        matches.insert((code.to_owned(), String::new()), found(code));
                    }
                }
                Query::NamePrefix(prefix) => {
                    let start = match &name_cursor {
                        Some(cursor) if cursor.0.as_str() >= prefix.as_str() => cursor.clone(),
                        _ => (prefix.clone(), String::new()),
                    };
                    let names = book
                        .by_name
                        .range(start..)
                        .map(|(key, _)| key)
                        .take_while(|(name, _)| name.starts_with(prefix.as_str()))
                        .filter(|key| Some(*key) != name_cursor.as_ref() && !hidden(&key.1))
                        .take(limit);
                    for (name, code) in names {
                        matches.insert((name.clone(), code.clone()), found(code));
                    }
                }
            }
        }
        matches.into_values().take(limit).collect()
    }
}

/// The region a request names: empty for the national book alone, else a six-digit code.
pub fn request_region(region_code: &str) -> ApiResult<Option<&str>> {
    match region_code {
        "" => Ok(None),
        code if is_region_code(code) => Ok(Some(code)),
        _ => Err(ApiError::invalid_field(
            Reason::InvalidArgument,
            "region_code",
            "must be empty (national) or a six-digit region code",
        )),
    }
}

/// A requested item code: well-formed, or INVALID_ARGUMENT naming `field`.
pub fn request_code<'a>(field: &str, code: &'a str) -> ApiResult<&'a str> {
    if is_item_code(code) {
        Ok(code)
    } else {
        Err(ApiError::invalid_field(
            Reason::InvalidArgument,
            field,
            "must be 1-40 upper-case letters, digits, '-' or '.'",
        ))
    }
}

/// A search's query: exactly one of a code prefix and a name prefix, each non-empty and bounded.
pub fn request_query(code_prefix: Option<&str>, name_prefix: Option<&str>) -> ApiResult<Query> {
    match (code_prefix, name_prefix) {
        (Some(prefix), None) => Ok(Query::CodePrefix(request_code("code_prefix", prefix)?.to_owned())),
        (None, Some(prefix)) => {
            if !printable(prefix) || prefix.chars().count() > MAX_NAME_PREFIX_CHARS {
                return Err(ApiError::invalid_field(
                    Reason::InvalidArgument,
                    "name_prefix",
                    "must be 1-100 printable characters",
                ));
            }
            Ok(Query::NamePrefix(prefix.to_owned()))
        }
        _ => Err(ApiError::invalid_field(Reason::InvalidArgument, "query", "give a code_prefix or a name_prefix")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(found: &[Found<'_>]) -> Vec<String> {
        found.iter().map(|f| f.item.code.clone()).collect()
    }

    #[test]
    fn the_builtin_catalogue_is_valid_and_regions_override_national_items() {
        let catalog = Catalog::builtin();
        let national = catalog.lookup(None, "110200001").unwrap();
        assert_eq!(
            (national.item.price_cap_cents, national.region, national.version),
            (Some(1000), None, "NATIONAL-2026-12")
        );
        // A district of Shanghai gets its province's book; Beijing the national one.
        let shanghai = catalog.lookup(Some("310115"), "110200001").unwrap();
        assert_eq!(
            (shanghai.item.price_cap_cents, shanghai.region, shanghai.version),
            (Some(1400), Some("310000"), "310000-2026-12")
        );
        assert_eq!(catalog.lookup(Some("110105"), "110200001").unwrap().region, None);
        assert!(catalog.lookup(Some("110105"), "310000-T-0001").is_none(), "a region's own items stay there");
        assert!(catalog.lookup(Some("310000"), "310000-T-0001").is_some());
        assert!(catalog.lookup(None, "NOPE").is_none());
    }

    #[test]
    fn searches_page_in_order_and_a_region_hides_the_national_item_it_overrides() {
        let catalog = Catalog::builtin();
        let all = catalog.search(Some("310115"), &Query::CodePrefix("".to_owned()), None, 100);
        assert_eq!(all.len(), 9, "eight national items and the region's own, its override once");
        let x = catalog.search(None, &Query::CodePrefix("X".to_owned()), None, 2);
        assert_eq!(codes(&x), ["XA11HAX001A001010101", "XB05AAR040B002010101"]);
        let next = catalog.search(None, &Query::CodePrefix("X".to_owned()), Some("XB05AAR040B002010101"), 2);
        assert_eq!(codes(&next), ["XJ01CAA040A001010101", "XM01AEB020A001010101"]);
        let last = catalog.search(None, &Query::CodePrefix("X".to_owned()), Some("XM01AEB020A001010101"), 2);
        assert!(last.is_empty());

        let ones = catalog.search(Some("310000"), &Query::CodePrefix("1".to_owned()), None, 10);
        assert_eq!(codes(&ones), ["110200001"], "once, from the region's book");
        assert_eq!(ones[0].region, Some("310000"));
        let threes = catalog.search(Some("310000"), &Query::CodePrefix("3".to_owned()), None, 10);
        assert_eq!(codes(&threes), ["310000-T-0001"]);

        let by_name = catalog.search(Some("310000"), &Query::NamePrefix("普通".to_owned()), None, 10);
        assert_eq!(by_name.len(), 1, "the national item of the same code is hidden");
        assert_eq!(by_name[0].item.price_cap_cents, Some(1400));
        let page_one = catalog.search(None, &Query::NamePrefix("一".to_owned()), None, 1);
        assert_eq!(codes(&page_one), ["C0301010010000000000000001"]);
        assert!(
            catalog.search(None, &Query::NamePrefix("一".to_owned()), Some("C0301010010000000000000001"), 1).is_empty()
        );
    }

    #[test]
    fn bad_books_are_refused_with_the_item_named() {
        let book = |items: &str| format!("version = \"V1\"\n{items}");
        let item = |code: &str, extra: &str| {
            format!(
                "[[items]]\ncode = \"{code}\"\nname = \"药\"\nkind = \"DRUG\"\nclass = \"A\"\nunit = \"盒\"\n{extra}\n"
            )
        };
        assert!(Catalog::from_books(&book(&item("X1", "")), []).is_ok());
        for (text, wanted) in [
            (book(&format!("{}{}", item("X1", ""), item("X1", ""))), "listed twice"),
            (book(&item("x1", "")), "code must be"),
            (book(&item("X1", "price_cap_cents = 0")), "price_cap_cents"),
            (book(&item("X1", "colour = \"red\"")), "unknown field"),
            (book(&item("X1", "").replace("\"A\"", "\"D\"")), "unknown variant"),
            ("version = \"\"".to_owned(), "version"),
        ] {
            let error = Catalog::from_books(&text, []).unwrap_err().to_string();
            assert!(error.contains(wanted), "{wanted}: {error}");
        }
        let region_named_badly = Catalog::from_books(&book(""), [("31000", "version = \"V\"")]).unwrap_err();
        assert!(region_named_badly.to_string().contains("six-digit"), "{region_named_badly}");
    }

    #[test]
    fn a_folder_holds_the_national_book_and_region_books_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(NATIONAL_FILE), BUILTIN_NATIONAL_TOML).unwrap();
        std::fs::write(dir.path().join("310000.toml"), BUILTIN_REGION_310000_TOML).unwrap();
        assert_eq!(Catalog::load_dir(dir.path()).unwrap(), Catalog::builtin());
        std::fs::write(dir.path().join("shanghai.toml"), BUILTIN_REGION_310000_TOML).unwrap();
        assert!(Catalog::load_dir(dir.path()).unwrap_err().to_string().contains("shanghai.toml"));
    }

    #[test]
    fn requests_are_checked_before_any_search() {
        assert_eq!(request_region("").unwrap(), None);
        assert_eq!(request_region("310115").unwrap(), Some("310115"));
        for bad in ["31011", "0310115", "31011x", "national"] {
            assert_eq!(request_region(bad).unwrap_err().reason(), Reason::InvalidArgument, "{bad}");
        }
        assert!(request_code("code", "").is_err());
        assert!(request_code("code", &"X".repeat(41)).is_err());
        assert!(request_code("code", "XJ01 CAA").is_err());
        assert!(request_query(None, None).is_err());
        assert!(request_query(Some("X"), Some("阿")).is_err());
        assert!(request_query(None, Some("")).is_err());
        assert!(request_query(None, Some("\u{0}")).is_err());
        assert_eq!(request_query(None, Some("阿莫")).unwrap(), Query::NamePrefix("阿莫".to_owned()));
    }
}
