//! Every error code the API answers, by area: its status, whether an app should retry, and
//! when it is answered. The one list of them, which the rest must agree with, each checked
//! by a test here: the tables of `docs/API.md` are rendered from it (`BLESS=1 cargo test -p
//! gateway --lib error_codes` rewrites them), every code the gateway builds (a literal in a
//! handler, or a domain refusal's code) is listed with the status it is answered with, and so
//! is every code the OpenAPI spec's response descriptions name.

/// One row of an area's table: codes answered alike.
#[derive(Debug, Clone, Copy)]
pub struct CodeRow {
    pub codes: &'static [&'static str],
    pub statuses: &'static [u16],
    /// What an app should do: `no`, `same id` (the same request again after Retry-After), …
    pub retry: &'static str,
    pub when: &'static str,
}

/// A group of routes and the codes they answer (besides those of any route).
#[derive(Debug, Clone, Copy)]
pub struct Area {
    pub title: &'static str,
    pub rows: &'static [CodeRow],
}

const fn row(
    codes: &'static [&'static str],
    statuses: &'static [u16],
    retry: &'static str,
    when: &'static str,
) -> CodeRow {
    CodeRow {
        codes,
        statuses,
        retry,
        when,
    }
}

pub static AREAS: &[Area] = &[
    Area {
        title: "Any route",
        rows: &[
        row(&["malformed_json"], &[400], "no", "the body is not JSON"),
        row(&["invalid_body"], &[400, 422], "no", "wrong types, unknown fields, NUL in a string"),
        row(&["invalid_id"], &[400], "no", "a path id that is not a positive integer"),
        row(&["invalid_query"], &[400], "no", "a bad query string (e.g. `wait_ms` above its maximum)"),
        row(&["unreadable_body"], &[400], "no", "the body could not be read"),
        row(&["missing_token", "invalid_token", "token_expired"], &[401], "no", "the user's JWT"),
        row(&["invalid_admin_key"], &[401], "no", "the admin key"),
        row(&["not_found"], &[404], "no", "no such route"),
        row(&["body_timeout"], &[408], "yes", "the body did not arrive within `http.body_read_timeout_ms`"),
        row(&["body_too_large"], &[413], "no", "over 16 KiB"),
        row(&["unsupported_media_type"], &[415], "no", "not `Content-Type: application/json`"),
        row(&["rate_limited"], &[429], "same id", "a rate limit (per IP, per user, global) is empty"),
        row(&["internal_error"], &[500], "no", "a bug; logged once with its cause, route and request id"),
        row(&["unavailable"], &[503], "same id", "a dependency is down or slow"),
        ],
    },
    Area {
        title: "Seckill orders and sale tokens",
        rows: &[
        row(&["invalid_quantity", "invalid_request_id"], &[422], "no", "the order's fields"),
        row(&["not_started"], &[403], "same id, at the start", "nothing was reserved"),
        row(&["paused"], &[403], "same id, when resumed", "an operator paused the sale"),
        row(&["ended"], &[403], "no", "the sale is over"),
        row(&["sale_token_required", "sale_token_invalid", "sale_token_expired"], &[403], "same id, with a new token", "the sale requires a token"),
        row(&["sold_out"], &[409], "no", "no units left"),
        row(&["limit_exceeded"], &[409], "no", "the buyer holds the sale's per-user limit"),
        row(&["promotion_not_found"], &[404], "no", "no such sale"),
        row(&["overloaded"], &[503], "same id", "this gateway shed the order before any work"),
        row(&["order_unconfirmed"], &[503], "same id", "the order is held, but Redis' replicas or the broker did not confirm it in time; the retry gets the same order"),
        row(&["recovering"], &[503], "same id", "the sale's Redis node may have lost writes; it rebuilds itself within seconds"),
        row(&["no_order_ids"], &[503], "same id", "this gateway is renewing its worker-id lease"),
        row(&["not_loaded"], &[503], "same id (Retry-After 5)", "the sale's stock is not in Redis"),
        row(&["too_early"], &[403], "after Retry-After", "tokens are handed out from `sale_tokens.lead_secs` before the start"),
        row(&["challenge_required"], &[403], "with an answer", "the challenge was not answered"),
        row(&["challenge_failed"], &[403], "with a new answer", "wrong solution, or a puzzle not issued to this buyer"),
        row(&["challenge_expired"], &[403], "with a new puzzle", "past `sale_tokens.puzzle_ttl_secs`"),
        row(&["invalid_solution"], &[422], "no", "not a decimal nonce"),
        row(&["verifier_unavailable", "verifier_busy"], &[503], "yes", "the sale's captcha verifier is slow, down or saturated"),
        ],
    },
    Area {
        title: "Orders, checkout, payments",
        rows: &[
        row(&["order_not_found"], &[404], "no", "no such order, or another buyer's"),
        row(&["too_many_waiters"], &[503], "yes, any gateway", "this gateway holds its maximum of long polls"),
        row(&["busy"], &[503], "same id", "checkout's own concurrency slots are full"),
        row(&["out_of_stock", "coupon_unavailable"], &[409], "no", "the state of stock or the coupon refuses the basket"),
        row(&["coupon_not_yet_valid", "coupon_expired", "coupon_min_spend_not_met"], &[409], "no", "the coupon's rules"),
        row(&["invalid_items", "duplicate_item", "invalid_address", "unknown_sku"], &[422], "no", "the basket"),
        row(&["not_payable"], &[409], "no", "the order is not `pending_payment`"),
        row(&["illegal_transition"], &[409], "no", "the lifecycle forbids it"),
        row(&["missing_signature", "invalid_signature"], &[401], "no", "the callback's `X-Signature`"),
        row(&["missing_timestamp", "stale_callback"], &[401], "no", "the callback's `timestamp` is absent or outside the replay window"),
        row(&["amount_mismatch"], &[422], "no", "the amount differs from the order's total; recorded for refund"),
        ],
    },
    Area {
        title: "Admin",
        rows: &[
        row(&["promotion_not_found", "sku_not_found", "coupon_not_found"], &[404], "no", "no such row"),
        row(&["invalid_window", "invalid_stock", "invalid_price", "invalid_limit", "invalid_field", "invalid_shards", "invalid_challenge"], &[422], "no", "a field out of range"),
        row(&["edit_conflict"], &[409], "reload, then retry", "the row changed meanwhile"),
        row(&["promotion_running"], &[409], "no", "a started sale: that field cannot change, and it cannot be deleted"),
        row(&["ended"], &[409], "no", "the sale is over"),
        row(&["stock_below_reserved"], &[409], "no", "Redis holds more reserved units than the new stock; the edit was undone"),
        row(&["started_not_loaded"], &[409], "no", "a started sale Redis does not hold; the consumers rebuild it ([runbook](OPERATIONS.md#runbook-redis-failed-over-restarted-or-lost-data))"),
        row(&["sale_retired"], &[409], "no", "the sale's keys left Redis; it can no longer change"),
        row(&["has_orders"], &[409], "no", "a sale with orders cannot be deleted"),
        row(&["sku_exists", "code_taken"], &[409], "no", "the SKU id or coupon code is taken"),
        ],
    },
];

/// Whether `code` is listed with `status` in any area.
pub fn is_listed(code: &str, status: u16) -> bool {
    AREAS
        .iter()
        .flat_map(|a| a.rows)
        .any(|r| r.codes.contains(&code) && r.statuses.contains(&status))
}

/// An area's table, as `docs/API.md` holds it.
pub fn table(area: &Area) -> String {
    let mut out = String::from("| code | status | retry | when |\n|---|---|---|---|\n");
    for r in area.rows {
        let codes: Vec<String> = r.codes.iter().map(|c| format!("`{c}`")).collect();
        let statuses: Vec<String> = r.statuses.iter().map(u16::to_string).collect();
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            codes.join(", "),
            statuses.join(", "),
            r.retry,
            r.when
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn api_doc() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/API.md")
    }

    /// The table under `### <title>` in the doc: its byte range.
    fn table_range(doc: &str, title: &str) -> std::ops::Range<usize> {
        let heading = format!("### {title}\n\n");
        let start = doc
            .find(&heading)
            .unwrap_or_else(|| panic!("docs/API.md has no section {title:?}"))
            + heading.len();
        let mut end = start;
        for line in doc[start..].split_inclusive('\n') {
            if !line.starts_with('|') {
                break;
            }
            end += line.len();
        }
        start..end
    }

    #[test]
    fn the_api_reference_tables_are_rendered_from_the_list() {
        let path = api_doc();
        let mut doc = std::fs::read_to_string(&path).expect("read docs/API.md");
        let bless = std::env::var_os("BLESS").is_some();
        for area in AREAS {
            let range = table_range(&doc, area.title);
            let rendered = table(area);
            if bless {
                doc.replace_range(range, &rendered);
            } else {
                assert_eq!(
                    doc[range].to_string(),
                    rendered,
                    "docs/API.md, {:?}: rerun with BLESS=1 to render it from error_codes.rs",
                    area.title
                );
            }
        }
        if bless {
            std::fs::write(&path, doc).expect("write docs/API.md");
        }
    }

    /// The status a constructor of `ApiError` gives, by its name.
    fn status_of_constructor(name: &str) -> Option<u16> {
        Some(match name {
            "bad_request" => 400,
            "unauthorized" => 401,
            "forbidden" => 403,
            "not_found" => 404,
            "conflict" => 409,
            "unprocessable" => 422,
            _ => return None,
        })
    }

    fn status_of_name(name: &str) -> u16 {
        match name {
            "BAD_REQUEST" => 400,
            "UNAUTHORIZED" => 401,
            "FORBIDDEN" => 403,
            "NOT_FOUND" => 404,
            "REQUEST_TIMEOUT" => 408,
            "CONFLICT" => 409,
            "PAYLOAD_TOO_LARGE" => 413,
            "UNSUPPORTED_MEDIA_TYPE" => 415,
            "UNPROCESSABLE_ENTITY" => 422,
            "TOO_MANY_REQUESTS" => 429,
            "INTERNAL_SERVER_ERROR" => 500,
            "SERVICE_UNAVAILABLE" => 503,
            other => panic!("a status this test does not know: {other}"),
        }
    }

    /// The string literal a call's argument list starts with, after `skip` leading
    /// arguments (`None` when that argument is not a literal).
    fn literal_arg(rest: &str, skip: usize) -> Option<&str> {
        let mut rest = rest.trim_start().strip_prefix('(')?;
        for _ in 0..skip {
            rest = &rest[rest.find(',')? + 1..];
        }
        let rest = rest.trim_start().strip_prefix('"')?;
        Some(&rest[..rest.find('"')?])
    }

    /// Every (code, status) built from a literal in the gateway's sources: through an
    /// `ApiError` constructor, `ApiError::new(StatusCode::…, "code", …)` or the seckill
    /// route's `retry_later` (503).
    fn codes_built_in(source: &str) -> Vec<(String, u16)> {
        let mut found = Vec::new();
        for prefix in ["ApiError::", "Self::"] {
            for (at, _) in source.match_indices(prefix) {
                let rest = &source[at + prefix.len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let after = &rest[name.len()..];
                if let Some(status) = status_of_constructor(&name) {
                    if let Some(code) = literal_arg(after, 0) {
                        found.push((code.to_owned(), status));
                    }
                } else if name == "new" {
                    let args = after.trim_start().trim_start_matches('(').trim_start();
                    if let Some(status) = args.strip_prefix("StatusCode::") {
                        let status: String = status
                            .chars()
                            .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                            .collect();
                        if let Some(code) = literal_arg(after, 1) {
                            found.push((code.to_owned(), status_of_name(&status)));
                        }
                    }
                }
            }
        }
        for (at, _) in source.match_indices("retry_later(") {
            if let Some(code) = literal_arg(&source[at + "retry_later".len()..], 0) {
                found.push((code.to_owned(), 503));
            }
        }
        found
    }

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read the sources") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn every_code_the_gateway_builds_is_listed_with_its_status() {
        let mut files = Vec::new();
        rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
        let mut built = Vec::new();
        // Not this file: its comments and tests name the patterns.
        files.retain(|f| !f.ends_with("error_codes.rs"));
        for file in &files {
            let source = std::fs::read_to_string(file).expect("read a source file");
            built.extend(
                codes_built_in(&source)
                    .into_iter()
                    .map(|(c, s)| (c, s, file.clone())),
            );
        }
        assert!(
            built.len() > 50,
            "the scan finds the handlers' codes: {}",
            built.len()
        );
        let unlisted: Vec<_> = built.iter().filter(|(c, s, _)| !is_listed(c, *s)).collect();
        assert!(
            unlisted.is_empty(),
            "codes missing from error_codes.rs: {unlisted:?}"
        );
    }

    #[test]
    fn every_code_of_a_domain_refusal_is_listed_with_its_status() {
        use crate::sale_counters::SaleRejection;
        use order_core::domain::checkout::CheckoutRejection;
        use order_core::domain::pricing::{PricingError, Rejection};
        use order_core::domain::promotion::PromotionError;
        for r in SaleRejection::ALL {
            assert!(is_listed(r.code(), r.status().as_u16()), "{r:?}");
        }
        let promotion = [
            PromotionError::InvalidWindow,
            PromotionError::InvalidStock,
            PromotionError::InvalidPrice,
            PromotionError::InvalidLimit,
            PromotionError::InvalidText("title"),
            PromotionError::InvalidAddStock,
            PromotionError::LockedWhileRunning("stock"),
            PromotionError::Ended,
            PromotionError::InvalidShards,
        ];
        for e in promotion {
            let status = crate::routes::admin::invalid_status(&e).as_u16();
            assert!(is_listed(e.code(), status), "{e:?}");
        }
        let checkout = [
            CheckoutRejection::Pricing(PricingError::InvalidLines),
            CheckoutRejection::Pricing(PricingError::InvalidQuantity),
            CheckoutRejection::Pricing(PricingError::DuplicateItem),
            CheckoutRejection::Pricing(PricingError::CouponNotYetValid),
            CheckoutRejection::Pricing(PricingError::CouponExpired),
            CheckoutRejection::Pricing(PricingError::CouponMinSpendNotMet(1)),
            CheckoutRejection::Pricing(PricingError::Overflow),
            CheckoutRejection::InvalidAddress("name"),
            CheckoutRejection::UnknownSku("s".into()),
            CheckoutRejection::OutOfStock("s".into()),
            CheckoutRejection::CouponUnavailable,
            CheckoutRejection::InvalidRequestId,
        ];
        for e in checkout {
            let (code, kind) = e.code_and_kind();
            let status = match kind {
                Rejection::Conflict => 409,
                Rejection::Invalid => 422,
            };
            assert!(is_listed(code, status), "{e:?}");
        }
    }

    /// The codes a response description names: words of letters and underscores that are
    /// listed codes (a description may name a field, too).
    fn codes_named(description: &str) -> Vec<&str> {
        description
            .split(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .filter(|w| w.contains('_') && AREAS.iter().flat_map(|a| a.rows).any(|r| r.codes.contains(w)))
            .collect()
    }

    #[test]
    fn every_code_the_spec_names_is_listed_with_the_status_it_is_named_under() {
        let spec = serde_json::to_value(crate::openapi::spec()).expect("the spec as JSON");
        let mut named = 0;
        for (path, item) in spec["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("an operation") {
                let Some(responses) = operation["responses"].as_object() else {
                    continue;
                };
                for (status, response) in responses {
                    let status: u16 = status.parse().expect("a numeric status");
                    let description = response["description"].as_str().unwrap_or_default();
                    for code in codes_named(description) {
                        named += 1;
                        assert!(
                            is_listed(code, status),
                            "{method} {path}: {status} names {code:?}, which error_codes.rs lists under another status"
                        );
                    }
                }
            }
        }
        assert!(named > 20, "the spec names codes: {named}");
    }
}
