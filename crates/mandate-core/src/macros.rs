//! Closed string enums: parsed with an error that names the field and the
//! accepted values, serialised as their text.

macro_rules! closed_enum {
    ($(#[$doc:meta])* $name:ident, $field:literal, { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ::serde::Serialize, ::serde::Deserialize)]
        #[serde(try_from = "String", into = "&'static str")]
        pub enum $name { $($(#[$vdoc])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }
        impl ::std::str::FromStr for $name {
            type Err = $crate::Invalid;
            fn from_str(s: &str) -> Result<Self, $crate::Invalid> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::Invalid::new($field, format!(
                        "`{}` is not one of: {}",
                        s.chars().take(40).collect::<String>(),
                        [$($text),+].join(", ")
                    ))),
                }
            }
        }
        impl TryFrom<String> for $name {
            type Error = $crate::Invalid;
            fn try_from(s: String) -> Result<Self, $crate::Invalid> { s.parse() }
        }
        impl From<$name> for &'static str {
            fn from(v: $name) -> &'static str { v.as_str() }
        }
        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result { f.write_str(self.as_str()) }
        }
    };
}
