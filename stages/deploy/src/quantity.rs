//! Kubernetes resource quantities (`500m`, `2Gi`, `1.5`, `1e3`), checked at start so a typo in
//! `SANDBOX_*` stops the process instead of failing every Deployment at the API server.

/// The value of a quantity in base units (cores, bytes), or `None` when `text` is not one.
/// Grammar: `<number><suffix>`, number `\d+(\.\d*)?|\.\d+`, suffix a binary (`Ki`..`Ei`),
/// decimal (`n`, `u`, `m`, ``, `k`, `M`..`E`) or exponent (`e3`, `E-2`) suffix. Signs are
/// refused: a negative resource is never meant.
pub fn parse_quantity(text: &str) -> Option<f64> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let valid_number = {
        let mut parts = number.splitn(2, '.');
        let whole = parts.next().unwrap_or("");
        let fraction = parts.next();
        !(whole.is_empty() && fraction.is_none_or(str::is_empty))
    };
    if !valid_number {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let multiplier = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exponent => {
            let digits = exponent.strip_prefix(['e', 'E'])?;
            let unsigned = digits.strip_prefix(['+', '-']).unwrap_or(digits);
            if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            10f64.powi(digits.parse().ok()?)
        }
    };
    Some(value * multiplier)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_kubernetes_accepts() {
        assert_eq!(parse_quantity("2000m"), Some(2.0));
        assert_eq!(parse_quantity("1"), Some(1.0));
        assert_eq!(parse_quantity("0.5"), Some(0.5));
        assert_eq!(parse_quantity(".5"), Some(0.5));
        assert_eq!(parse_quantity("4Gi"), Some(4.0 * 1024f64.powi(3)));
        assert_eq!(parse_quantity("128M"), Some(128e6));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("1E-3"), Some(0.001));
    }

    #[test]
    fn refuses_the_rest() {
        for bad in [
            "", "Gi", "2 Gi", "2gi", "-1", "+1", "1.2.3", "2GB", "1e", "1e+", "one", ".", "2Gi ",
        ] {
            assert_eq!(parse_quantity(bad), None, "{bad:?}");
        }
    }
}
