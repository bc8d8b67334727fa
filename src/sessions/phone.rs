//! Phone numbers as the API takes them, and WhatsApp message ids.

use std::fmt;

use rand::RngExt;

/// An E.164 number, digits only (no `+`): `628123456789`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Phone(String);

impl Phone {
    /// Accepts digits with an optional leading `+` and spaces or dashes
    /// between them, as people write numbers; E.164 allows 15 digits.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let raw = raw.trim();
        let raw = raw.strip_prefix('+').unwrap_or(raw);
        let mut digits = String::with_capacity(raw.len());
        for c in raw.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' => {}
                _ => {
                    return Err(
                        "must be a phone number in international form: digits, e.g. 628123456789",
                    );
                }
            }
        }
        if !(7..=15).contains(&digits.len()) {
            return Err("must have 7 to 15 digits, with the country code");
        }
        if digits.starts_with('0') {
            return Err("must start with the country code, not 0");
        }
        Ok(Phone(digits))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The number's personal chat.
    pub fn jid(&self) -> String {
        format!("{}@s.whatsapp.net", self.0)
    }
}

impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A fresh WhatsApp message id in the form WhatsApp Web uses (`3EB0` and
/// hex). WAGO fixes it when it accepts a send, so a resend after a crash
/// carries the same id and the recipient recognises the repeat.
pub fn new_message_id() -> String {
    let bytes: [u8; 9] = rand::rng().random();
    format!("3EB0{}", hex::encode_upper(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_read_as_people_write_them() {
        assert_eq!(
            Phone::parse("+62 812-3456-789").unwrap().as_str(),
            "628123456789"
        );
        assert_eq!(
            Phone::parse("628123456789").unwrap().jid(),
            "628123456789@s.whatsapp.net"
        );
        for bad in [
            "",
            "+",
            "0812345678",
            "62812abc",
            "1234",
            "1234567890123456",
            "62812@s",
        ] {
            assert!(Phone::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn message_ids_are_unique_and_shaped_like_whatsapps() {
        let a = new_message_id();
        assert!(a.starts_with("3EB0") && a.len() == 22, "{a}");
        assert_ne!(a, new_message_id());
    }
}
