//! Closed sets of names, spelled exactly as the API and the database spell them.

use std::fmt;

/// A name outside its set: "'x' is not a network (TRON, BSC, BASE)", or "(USDT or USDC)"
/// when the set has two names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName {
    pub value: String,
    pub noun: &'static str,
    pub names: &'static [&'static str],
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let separator = if self.names.len() == 2 { " or " } else { ", " };
        let names = self.names.join(separator);
        write!(f, "'{}' is not {} ({names})", self.value, self.noun)
    }
}

impl std::error::Error for UnknownName {}

/// Declares a `Copy` enum whose variants are the given names, with `ALL`, `NAMES`, `as_str`,
/// `parse`, `FromStr` (an [`UnknownName`] error), `Display`, serde, and `sqlx` (stored as text).
/// `ignore_case` after the noun makes parsing accept any letter case.
macro_rules! string_enum {
    (@same ignore_case, $a:expr, $b:expr) => { $a.eq_ignore_ascii_case($b) };
    (@same, $a:expr, $b:expr) => { $a == $b };
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident ($noun:literal $(, $ignore_case:ident)?) {
            $($(#[$variant_meta:meta])* $variant:ident = $text:literal),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        $vis enum $name {
            $($(#[$variant_meta])* $variant),+
        }

        impl $name {
            pub const ALL: [$name; [$($text),+].len()] = [$($name::$variant),+];
            pub const NAMES: [&'static str; [$($text),+].len()] = [$($text),+];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            pub fn parse(s: &str) -> Option<Self> {
                Self::ALL
                    .into_iter()
                    .find(|v| $crate::domain::names::string_enum!(@same $($ignore_case)?, v.as_str(), s))
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::domain::names::UnknownName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s).ok_or_else(|| $crate::domain::names::UnknownName {
                    value: s.to_owned(),
                    noun: $noun,
                    names: &Self::NAMES,
                })
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <::std::borrow::Cow<'de, str>>::deserialize(d)?;
                text.parse().map_err(::serde::de::Error::custom)
            }
        }

        impl ::sqlx::Type<::sqlx::Postgres> for $name {
            fn type_info() -> ::sqlx::postgres::PgTypeInfo {
                <&str as ::sqlx::Type<::sqlx::Postgres>>::type_info()
            }

            fn compatible(ty: &::sqlx::postgres::PgTypeInfo) -> bool {
                <&str as ::sqlx::Type<::sqlx::Postgres>>::compatible(ty)
            }
        }

        impl ::sqlx::postgres::PgHasArrayType for $name {
            fn array_type_info() -> ::sqlx::postgres::PgTypeInfo {
                <&str as ::sqlx::postgres::PgHasArrayType>::array_type_info()
            }

            fn array_compatible(ty: &::sqlx::postgres::PgTypeInfo) -> bool {
                <&str as ::sqlx::postgres::PgHasArrayType>::array_compatible(ty)
            }
        }

        impl<'q> ::sqlx::Encode<'q, ::sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut ::sqlx::postgres::PgArgumentBuffer,
            ) -> Result<::sqlx::encode::IsNull, ::sqlx::error::BoxDynError> {
                <&str as ::sqlx::Encode<'q, ::sqlx::Postgres>>::encode(self.as_str(), buf)
            }
        }

        impl<'r> ::sqlx::Decode<'r, ::sqlx::Postgres> for $name {
            fn decode(
                value: ::sqlx::postgres::PgValueRef<'r>,
            ) -> Result<Self, ::sqlx::error::BoxDynError> {
                let text = <&str as ::sqlx::Decode<'r, ::sqlx::Postgres>>::decode(value)?;
                Ok(text.parse::<$name>()?)
            }
        }
    };
}

pub(crate) use string_enum;

/// For a checked text newtype (`struct T(String)` with `parse(&str) -> Result<Self, &'static
/// str>`): `FromStr` through `parse`, `as_str` and `into_string`.
macro_rules! checked_text {
    ($($type:ident),+) => {
        $(impl ::std::str::FromStr for $type {
            type Err = &'static str;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl $type {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        })+
    };
}

pub(crate) use checked_text;

#[cfg(test)]
mod tests {

    string_enum! {
        enum Colour ("a colour") {
            Red = "red",
            Green = "green",
            Blue = "blue",
        }
    }

    #[test]
    fn names_round_trip_and_refusals_list_the_set() {
        for c in Colour::ALL {
            assert_eq!(c.as_str().parse::<Colour>(), Ok(c));
            assert_eq!(c.to_string(), c.as_str());
        }
        let refused = "Red".parse::<Colour>().unwrap_err();
        assert_eq!(
            refused.to_string(),
            "'Red' is not a colour (red, green, blue)"
        );
        assert_eq!(
            serde_json::from_str::<Colour>("\"green\"").unwrap(),
            Colour::Green
        );
        assert!(serde_json::from_str::<Colour>("\"violet\"").is_err());
        assert_eq!(serde_json::to_string(&Colour::Blue).unwrap(), "\"blue\"");
    }

    string_enum! {
        enum Shout ("a shout", ignore_case) {
            Hey = "HEY",
        }
    }

    #[test]
    fn ignore_case_accepts_any_letter_case() {
        assert_eq!(Shout::parse("hEy"), Some(Shout::Hey));
        assert_eq!(Colour::parse("RED"), None);
        assert_eq!(
            "hi".parse::<Shout>().unwrap_err().to_string(),
            "'hi' is not a shout (HEY)"
        );
    }
}
