//! Strict query-string parameters: each known name taken at most once (unless it is a list),
//! typed on the way out, and anything left over refused. Errors name the parameter and what it
//! expects, never the value (a value may be a patient reference).

use std::str::FromStr;

/// Parameters in one query string, at most this many.
const MAX_PARAMS: usize = 32;

/// Why a query string was refused (answered 400).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("the query string is not valid form encoding (a bad %-escape or not UTF-8)")]
    Encoding,
    #[error("more than {MAX_PARAMS} parameters")]
    TooMany,
    #[error("unknown parameter {name:?}")]
    Unknown { name: String },
    #[error("parameter {name} is given more than once")]
    Repeated { name: &'static str },
    #[error("parameter {name} is required")]
    Missing { name: &'static str },
    #[error("parameter {name} needs a value")]
    Empty { name: &'static str },
    #[error("parameter {name}: expected {expected}")]
    Invalid {
        name: &'static str,
        expected: &'static str,
    },
    #[error("parameter {name}: expected one of {expected}")]
    NotOneOf {
        name: &'static str,
        expected: String,
    },
    #[error("parameters {a} and {b} exclude each other")]
    Conflict { a: &'static str, b: &'static str },
}

/// The decoded `name=value` pairs not taken yet.
#[derive(Debug)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Splits and decodes `query` (the part after `?`, without the `#fragment`).
    pub fn parse(query: &str) -> Result<Self, ParamError> {
        let mut pairs = Vec::new();
        for piece in query.split('&').filter(|p| !p.is_empty()) {
            if pairs.len() == MAX_PARAMS {
                return Err(ParamError::TooMany);
            }
            let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
            pairs.push((decode(name)?, decode(value)?));
        }
        Ok(Self { pairs })
    }

    /// Takes every value of `name`.
    fn take(&mut self, name: &str) -> Vec<String> {
        let mut values = Vec::new();
        self.pairs.retain(|(n, v)| {
            if n == name {
                values.push(v.clone());
                false
            } else {
                true
            }
        });
        values
    }

    /// The one value of `name`, if given; an empty value is an error.
    pub fn text(&mut self, name: &'static str) -> Result<Option<String>, ParamError> {
        let mut values = self.take(name);
        match values.len() {
            0 => Ok(None),
            1 if values[0].is_empty() => Err(ParamError::Empty { name }),
            1 => Ok(values.pop()),
            _ => Err(ParamError::Repeated { name }),
        }
    }

    /// `name`, `name=true` or `name=false`.
    pub fn flag(&mut self, name: &'static str) -> Result<bool, ParamError> {
        let mut values = self.take(name);
        match values.pop() {
            _ if !values.is_empty() => Err(ParamError::Repeated { name }),
            None => Ok(false),
            Some(v) if v.is_empty() || v == "true" => Ok(true),
            Some(v) if v == "false" => Ok(false),
            Some(_) => Err(ParamError::Invalid {
                name,
                expected: "true or false",
            }),
        }
    }

    /// The one value of `name`, parsed.
    pub fn typed<T: FromStr>(
        &mut self,
        name: &'static str,
        expected: &'static str,
    ) -> Result<Option<T>, ParamError> {
        self.text(name)?
            .map(|v| {
                v.parse()
                    .map_err(|_| ParamError::Invalid { name, expected })
            })
            .transpose()
    }

    /// Every value of `name`, each parsed (a list parameter may repeat).
    pub fn all<T: FromStr>(
        &mut self,
        name: &'static str,
        expected: &'static str,
    ) -> Result<Vec<T>, ParamError> {
        self.take(name)
            .iter()
            .map(|v| {
                v.parse()
                    .map_err(|_| ParamError::Invalid { name, expected })
            })
            .collect()
    }

    /// The one value of `name`, which must be the label of one of `choices`.
    pub fn choice<T: Copy>(
        &mut self,
        name: &'static str,
        choices: &[T],
        label: impl Fn(&T) -> &'static str,
    ) -> Result<Option<T>, ParamError> {
        let Some(value) = self.text(name)? else {
            return Ok(None);
        };
        choices
            .iter()
            .find(|c| label(c) == value)
            .copied()
            .map(Some)
            .ok_or_else(|| ParamError::NotOneOf {
                name,
                expected: choices.iter().map(&label).collect::<Vec<_>>().join(", "),
            })
    }

    /// Refuses whatever was not taken.
    pub fn finish(self) -> Result<(), ParamError> {
        match self.pairs.into_iter().next() {
            None => Ok(()),
            Some((name, _)) => Err(ParamError::Unknown {
                name: name.chars().take(40).collect(),
            }),
        }
    }
}

/// Form decoding: `+` is a space, `%XX` a byte; the result must be UTF-8.
fn decode(raw: &str) -> Result<String, ParamError> {
    let raw = raw.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = raw.get(i + 1..i + 3).ok_or(ParamError::Encoding)?;
                let hex = std::str::from_utf8(hex).map_err(|_| ParamError::Encoding)?;
                // from_str_radix accepts a leading sign; two hex digits are required here.
                if !hex.bytes().all(|d| d.is_ascii_hexdigit()) {
                    return Err(ParamError::Encoding);
                }
                out.push(u8::from_str_radix(hex, 16).map_err(|_| ParamError::Encoding)?);
                i += 2;
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| ParamError::Encoding)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn decodes_strictly() {
        let cases: [(&str, Result<&str, ParamError>); 8] = [
            ("Patient%2F123", Ok("Patient/123")),
            ("a+b", Ok("a b")),
            ("%e2%82%ac", Ok("\u{20ac}")),
            ("plain", Ok("plain")),
            ("%", Err(ParamError::Encoding)),
            ("%4", Err(ParamError::Encoding)),
            ("%+1", Err(ParamError::Encoding)),
            ("%ff", Err(ParamError::Encoding)),
        ];
        for (raw, want) in cases {
            assert_eq!(decode(raw).as_deref(), want.as_deref(), "{raw:?}");
        }
    }

    #[test]
    fn takes_each_parameter_once_and_refuses_leftovers() {
        let mut p = Params::parse("a=1&&b=x&b=y&flag&n=7").unwrap();
        assert_eq!(p.text("a"), Ok(Some("1".to_owned())));
        assert_eq!(p.text("b"), Err(ParamError::Repeated { name: "b" }));
        assert_eq!(p.flag("flag"), Ok(true));
        assert_eq!(p.typed::<u32>("n", "n"), Ok(Some(7)));
        assert_eq!(p.text("missing"), Ok(None));
        p.finish().unwrap();

        let mut p = Params::parse("a=1&zzz=2").unwrap();
        assert_eq!(p.text("a"), Ok(Some("1".to_owned())));
        assert_eq!(
            p.finish(),
            Err(ParamError::Unknown {
                name: "zzz".to_owned()
            })
        );
    }

    #[test]
    fn typed_and_choice_errors_do_not_echo_the_value() {
        let mut p = Params::parse("pid=Patient%2F9&d=maybe&e=").unwrap();
        let pid = p.typed::<u32>("pid", "a process id").unwrap_err();
        assert!(!pid.to_string().contains("Patient"), "{pid}");
        let d = p.choice("d", &[1, 2], |n| if *n == 1 { "one" } else { "two" });
        let d = d.unwrap_err();
        assert_eq!(d.to_string(), "parameter d: expected one of one, two");
        assert_eq!(p.text("e"), Err(ParamError::Empty { name: "e" }));
    }

    #[test]
    fn bounds_the_number_of_parameters() {
        let many = vec!["a=1"; MAX_PARAMS + 1].join("&");
        assert_eq!(Params::parse(&many).unwrap_err(), ParamError::TooMany);
        assert!(Params::parse(&vec!["a=1"; MAX_PARAMS].join("&")).is_ok());
    }
}
