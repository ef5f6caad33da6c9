//! Timestamps: the database keeps milliseconds since the Unix epoch; the API shows them
//! in RFC 3339 exactly as poem-openapi renders a `DateTime<Utc>` (`to_rfc3339`), so that
//! bytes serialised straight from the domain equal what poem-openapi would send.

use chrono::{DateTime, Utc};

/// The instant `ms` milliseconds after the epoch (`None` out of chrono's range).
pub fn from_ms(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

/// The instant `ms` milliseconds after the epoch, as the API shows stored instants (the
/// epoch itself for one out of chrono's range, which no stored instant is).
pub fn at(ms: i64) -> DateTime<Utc> {
    from_ms(ms).unwrap_or_default()
}

/// Milliseconds in a UTC day (Unix time has no leap seconds).
pub const DAY_MS: i64 = 86_400_000;

/// The epoch millisecond of the UTC midnight that starts `ms`'s day.
pub fn utc_day_start(ms: i64) -> i64 {
    ms - ms.rem_euclid(DAY_MS)
}

/// Serde for an optional timestamp as poem-openapi writes one.
pub mod rfc3339_opt {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => s.serialize_str(&at.to_rfc3339()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) => DateTime::parse_from_rfc3339(&text).map(|at| Some(at.with_timezone(&Utc))).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use poem_openapi::types::ToJSON;

    #[test]
    fn a_timestamp_reads_as_poem_openapi_writes_it() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct At(#[serde(with = "super::rfc3339_opt")] Option<chrono::DateTime<chrono::Utc>>);
        for ms in [1_796_000_000_000, 1_796_000_000_123, 0] {
            let at = super::from_ms(ms);
            let ours = serde_json::to_value(At(at)).unwrap();
            assert_eq!(Some(ours.clone()), at.unwrap().to_json(), "{ms}");
            assert_eq!(serde_json::from_value::<At>(ours).unwrap(), At(at));
        }
    }

    #[test]
    fn a_day_starts_at_its_utc_midnight() {
        use chrono::Timelike;
        for ms in [-1, 0, 1, super::DAY_MS - 1, super::DAY_MS, 1_796_000_000_123, 1_796_083_199_999] {
            let day = super::utc_day_start(ms);
            let midnight = super::at(ms).with_hour(0).unwrap().with_minute(0).unwrap().with_second(0).unwrap().with_nanosecond(0).unwrap();
            assert_eq!(day, midnight.timestamp_millis(), "{ms}");
            assert!(day <= ms && ms - day < super::DAY_MS);
        }
    }
}
