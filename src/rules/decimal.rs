//! Exact decimal arithmetic for delta rewrites.
//!
//! Balance columns are BIGINT or DECIMAL (up to 65 digits): i64 and f64 both
//! lose money there, so values are arbitrary-precision integers with a
//! decimal scale.
use num_bigint::{BigInt, Sign};

/// An exact decimal number: `units * 10^-scale`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decimal {
    units: BigInt,
    scale: u32,
}

/// Exponents beyond this are not money; refusing them also bounds the work.
const MAX_EXPONENT: i64 = 200;

impl Decimal {
    /// Parse a MySQL numeric literal or a server's text value: optional
    /// sign, digits with an optional fraction, optional exponent. Leading
    /// and trailing ASCII whitespace is allowed (MySQL trims it when a
    /// quoted number is stored into a numeric column).
    pub fn parse(s: &str) -> Option<Decimal> {
        let s = s.trim_matches(|c: char| c.is_ascii_whitespace());
        let (neg, s) = match s.as_bytes().first()? {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let (mantissa, exp) = match s.find(['e', 'E']) {
            Some(i) => {
                let e: i64 = s[i + 1..].parse().ok()?;
                if e.abs() > MAX_EXPONENT {
                    return None;
                }
                (&s[..i], e)
            }
            None => (s, 0),
        };
        let (int, frac) = match mantissa.split_once('.') {
            Some((i, f)) => (i, f),
            None => (mantissa, ""),
        };
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let digits = format!("{int}{frac}");
        let mut units = BigInt::parse_bytes(digits.as_bytes(), 10)?;
        if neg {
            units = -units;
        }
        let mut scale = frac.len() as i64 - exp;
        if scale < 0 {
            units *= pow10((-scale) as u32);
            scale = 0;
        }
        Some(Decimal { units, scale: u32::try_from(scale).ok()? })
    }

    pub fn is_zero(&self) -> bool {
        self.normalized() == Decimal::parse("0").expect("zero parses").normalized()
    }

    pub fn is_negative(&self) -> bool {
        self.units.sign() == Sign::Minus
    }

    pub fn abs(&self) -> Decimal {
        Decimal { units: BigInt::from_biguint(Sign::Plus, self.units.magnitude().clone()), scale: self.scale }
    }

    fn rescale(&self, scale: u32) -> BigInt {
        debug_assert!(scale >= self.scale);
        &self.units * pow10(scale - self.scale)
    }

    /// `self - other`, exact, at the larger of the two scales.
    pub fn sub(&self, other: &Decimal) -> Decimal {
        let scale = self.scale.max(other.scale);
        Decimal { units: self.rescale(scale) - other.rescale(scale), scale }
    }

    /// `self + other`, exact.
    pub fn add(&self, other: &Decimal) -> Decimal {
        let zero = Decimal { units: BigInt::from(0), scale: 0 };
        self.sub(&zero.sub(other))
    }

    /// Rounded to `scale` fraction digits, half away from zero, as MySQL
    /// stores a value into a DECIMAL(p, scale) column.
    pub fn round_to(&self, scale: u32) -> Decimal {
        if self.scale <= scale {
            return Decimal { units: self.rescale(scale), scale };
        }
        let div = pow10(self.scale - scale);
        let half = &div / 2;
        let neg = self.units.sign() == Sign::Minus;
        let mag = if neg { -&self.units } else { self.units.clone() };
        let mut q = &mag / &div;
        if &mag % &div >= half {
            q += 1;
        }
        Decimal { units: if neg { -q } else { q }, scale }
    }

    /// Rounded to an integer half to even, as the server stores a DOUBLE
    /// into an integer column (`rint`).
    pub fn round_half_even(&self) -> Decimal {
        if self.scale == 0 {
            return self.clone();
        }
        let div = pow10(self.scale);
        let neg = self.units.sign() == Sign::Minus;
        let mag = if neg { -&self.units } else { self.units.clone() };
        let mut q = &mag / &div;
        let twice = (&mag % &div) * 2;
        if twice > div || (twice == div && (&q % 2u32).sign() != Sign::NoSign) {
            q += 1;
        }
        Decimal { units: if neg { -q } else { q }, scale: 0 }
    }

    /// Numeric comparison, whatever the scales.
    pub fn cmp_value(&self, other: &Decimal) -> std::cmp::Ordering {
        let scale = self.scale.max(other.scale);
        self.rescale(scale).cmp(&other.rescale(scale))
    }

    /// Same value with trailing fractional zeros removed (`8.00` -> `8`).
    pub fn normalized(&self) -> Decimal {
        let mut d = self.clone();
        let ten = BigInt::from(10);
        while d.scale > 0 && (&d.units % &ten).sign() == Sign::NoSign {
            d.units /= &ten;
            d.scale -= 1;
        }
        if d.units.sign() == Sign::NoSign {
            d.scale = 0;
        }
        d
    }
}

fn pow10(n: u32) -> BigInt {
    BigInt::from(10u32).pow(n)
}

/// Plain notation, never an exponent, `scale` fractional digits.
impl std::fmt::Display for Decimal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let digits = self.units.magnitude().to_string();
        let scale = self.scale as usize;
        if self.is_negative() {
            f.write_str("-")?;
        }
        if scale == 0 {
            return f.write_str(&digits);
        }
        let padded = if digits.len() <= scale { format!("{}{}", "0".repeat(scale + 1 - digits.len()), digits) } else { digits };
        let (i, frac) = padded.split_at(padded.len() - scale);
        write!(f, "{i}.{frac}")
    }
}

/// Canonical text of a numeric key literal so `8`, `08` and `8.0` find the
/// capture the server reported as `8`.
pub fn canonical_number(s: &str) -> Option<String> {
    Decimal::parse(s).map(|d| d.normalized().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::cmp::Ordering;

    fn d(s: &str) -> Decimal {
        Decimal::parse(s).unwrap()
    }

    #[test]
    fn half_even_as_rint() {
        for (v, want) in [("996.5", "996"), ("997.5", "998"), ("-2.5", "-2"), ("2.5000000000000004", "3"), ("7", "7"), ("-0.4", "0")] {
            assert_eq!(d(v).round_half_even().normalized().to_string(), want, "{v}");
        }
    }

    #[test]
    fn parse_and_print() {
        assert_eq!(d("616.50").to_string(), "616.50");
        assert_eq!(d("-0.05").to_string(), "-0.05");
        assert_eq!(d(".5").to_string(), "0.5");
        assert_eq!(d("5.").to_string(), "5");
        assert_eq!(d(" 12 ").to_string(), "12");
        assert_eq!(d("1.2e3").to_string(), "1200");
        assert_eq!(d("1.25e1").to_string(), "12.5");
        assert_eq!(d("125e-2").to_string(), "1.25");
        for bad in ["", "-", ".", "1.2.3", "abc", "1e", "0x10", "1e999", "1 2", "+-1"] {
            assert!(Decimal::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn rounding_as_decimal_columns_store() {
        assert_eq!(d("10.005").round_to(2).to_string(), "10.01");
        assert_eq!(d("-10.005").round_to(2).to_string(), "-10.01");
        assert_eq!(d("10.004").round_to(2).to_string(), "10.00");
        assert_eq!(d("7").round_to(2).to_string(), "7.00");
        assert_eq!(d("0.5").round_to(0).to_string(), "1");
    }

    #[test]
    fn subtraction_is_exact() {
        assert_eq!(d("1232").sub(&d("616")).to_string(), "616");
        assert_eq!(d("1232.00").sub(&d("616.50")).to_string(), "615.50");
        assert_eq!(d("616.50").sub(&d("1232")).to_string(), "-615.50");
        assert_eq!(d("0.3").sub(&d("0.1")).to_string(), "0.2");
        // i64::MAX and beyond.
        assert_eq!(d("9223372036854775807").sub(&d("-1")).to_string(), "9223372036854775808");
        let big = "12345678901234567890123456789012345.123456789012345678901234567890";
        let big2 = "12345678901234567890123456789012345.123456789012345678901234567891";
        assert_eq!(d(big2).sub(&d(big)).to_string(), "0.000000000000000000000000000001");
        assert_eq!(d(big).sub(&d(big2)).to_string(), "-0.000000000000000000000000000001");
    }

    #[test]
    fn canonical_keys() {
        assert_eq!(canonical_number("8").as_deref(), Some("8"));
        assert_eq!(canonical_number("08").as_deref(), Some("8"));
        assert_eq!(canonical_number("8.00").as_deref(), Some("8"));
        assert_eq!(canonical_number("-0").as_deref(), Some("0"));
        assert_eq!(canonical_number("18446744073709551615").as_deref(), Some("18446744073709551615"));
    }

    proptest! {
        #[test]
        fn sub_matches_i128(a in -1_000_000_000_000i64..1_000_000_000_000, b in -1_000_000_000_000i64..1_000_000_000_000, sa in 0u32..6, sb in 0u32..6) {
            // a*10^-sa - b*10^-sb computed in i128 at scale 6.
            let fmt = |v: i64, s: u32| Decimal { units: BigInt::from(v), scale: s }.to_string();
            let got = d(&fmt(a, sa)).sub(&d(&fmt(b, sb)));
            let want = (a as i128) * 10i128.pow(6 - sa) - (b as i128) * 10i128.pow(6 - sb);
            let want = Decimal { units: BigInt::from(want), scale: 6 };
            prop_assert_eq!(got.cmp_value(&want), Ordering::Equal);
            prop_assert_eq!(d(&got.to_string()), got);
        }
    }
}
