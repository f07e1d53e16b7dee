//! The built-in detector library: personal data, secrets and prompt-injection
//! markers, each a confirming regex behind a cheap trigger, with a validator
//! where one exists (Luhn, mod-97, SSN rules, entropy, JWT header …).
//!
//! The table is here; what a spec is, is `spec.rs`; the validators are
//! `validators.rs`.

pub use super::spec::{After, Category, Spec, Special, Trigger};
use super::validators::{
    date, dni, has_digit, ipv4, ipv6, jwt, phone, routing, secret_like, sin, zero_width_run,
};
pub use super::validators::{entropy, iban, luhn, ssn};

use After::*;
use Category::{Injection as Inj, Pii, Secret as Sec};
use Special::*;
use Trigger::*;

/// Every built-in detector.
pub const SPECS: &[Spec] = &[
    // ---- personal data ----
    Spec {
        name: "email",
        category: Pii,
        triggers: &[Byte(At)],
        pattern: r"(?i)\b[a-z0-9._%+-]{1,64}@[a-z0-9-]{1,63}(?:\.[a-z0-9-]{1,63})*\.[a-z]{2,24}\b",
        validate: None,
    },
    Spec {
        name: "phone_e164",
        category: Pii,
        triggers: &[Byte(PlusDigit)],
        pattern: r"\+[1-9](?:[ .-]?\d){7,14}\b",
        validate: Some(phone),
    },
    Spec {
        name: "phone_us",
        category: Pii,
        triggers: &[Digits(10)],
        pattern: r"(?:\(\d{3}\)\s?|\b\d{3}[.-])\d{3}[.-]\d{4}\b",
        validate: Some(phone),
    },
    Spec {
        name: "phone_uk",
        category: Pii,
        triggers: &[Digits(10)],
        pattern: r"\b0(?:7\d{3}\s?\d{6}|20\s?\d{4}\s?\d{4})\b",
        validate: Some(phone),
    },
    Spec {
        name: "phone_de",
        category: Pii,
        triggers: &[Digits(10)],
        pattern: r"\b01[5-7]\d[ /-]?\d{7,8}\b",
        validate: Some(phone),
    },
    Spec {
        name: "phone_fr",
        category: Pii,
        triggers: &[Digits(10)],
        pattern: r"\b0[1-9](?:[ .]\d{2}){4}\b",
        validate: Some(phone),
    },
    Spec {
        name: "us_ssn",
        category: Pii,
        triggers: &[Digits(9)],
        // `123-45-6789`, `123 45 6789`, `123.45.6789` or `123456789`, and
        // as a reader still reads it: doubled spaces or ` - ` twice
        // (`123  45  6789`, `123 - 45 - 6789`); mixed ones (`123-45 6789`)
        // are not, nor table cells, tabs or lines (`| 200 | 15 | 2024 |`
        // is a table of numbers far more often than an SSN).
        pattern: r"\b\d{3}(?:-\d{2}-|\x20\d{2}\x20|\.\d{2}\.|\d{2}|\x20{2,3}\d{2}\x20{2,3}|\x20-\x20\d{2}\x20-\x20)\d{4}\b",
        validate: Some(ssn),
    },
    Spec {
        name: "us_itin",
        category: Pii,
        triggers: &[Digits(9)],
        pattern: r"\b9\d{2}-(?:5[0-9]|6[0-5]|7\d|8[0-8]|9[0-24-9])-\d{4}\b",
        validate: None,
    },
    Spec {
        name: "card_visa",
        category: Pii,
        triggers: &[Digits(13)],
        pattern: r"\b4\d{3}(?:(?:[\x20./_\t|-]|\x20{2,3}|\x20-\x20|\x20\|\x20|\r?\n|\r)?\d{4}){3}\b",
        validate: Some(luhn),
    },
    Spec {
        name: "card_mastercard",
        category: Pii,
        triggers: &[Digits(16)],
        pattern: r"\b(?:5[1-5]\d{2}|222[1-9]|22[3-9]\d|2[3-6]\d{2}|27[01]\d|2720)(?:(?:[\x20./_\t|-]|\x20{2,3}|\x20-\x20|\x20\|\x20|\r?\n|\r)?\d{4}){3}\b",
        validate: Some(luhn),
    },
    Spec {
        name: "card_amex",
        category: Pii,
        triggers: &[Digits(15)],
        pattern: r"\b3[47]\d{2}(?:[\x20./_\t|-]|\x20{2,3}|\x20-\x20|\x20\|\x20|\r?\n|\r)?\d{6}(?:[\x20./_\t|-]|\x20{2,3}|\x20-\x20|\x20\|\x20|\r?\n|\r)?\d{5}\b",
        validate: Some(luhn),
    },
    Spec {
        name: "card_discover",
        category: Pii,
        triggers: &[Digits(16)],
        pattern: r"\b6(?:011|5\d{2})(?:(?:[\x20./_\t|-]|\x20{2,3}|\x20-\x20|\x20\|\x20|\r?\n|\r)?\d{4}){3}\b",
        validate: Some(luhn),
    },
    Spec {
        name: "card_jcb",
        category: Pii,
        triggers: &[Digits(16)],
        pattern: r"\b35(?:2[89]|[3-8]\d)(?:(?:[\x20./_\t|-]|\x20{2,3}|\x20-\x20|\x20\|\x20|\r?\n|\r)?\d{4}){3}\b",
        validate: Some(luhn),
    },
    Spec {
        name: "card_diners",
        category: Pii,
        triggers: &[Digits(14)],
        pattern: r"\b3(?:0[0-5]|[68]\d)\d(?:[\x20./_\t|-]|\x20{2,3}|\x20-\x20|\x20\|\x20|\r?\n|\r)?\d{6}(?:[\x20./_\t|-]|\x20{2,3}|\x20-\x20|\x20\|\x20|\r?\n|\r)?\d{4}\b",
        validate: Some(luhn),
    },
    Spec {
        name: "card_unionpay",
        category: Pii,
        triggers: &[Digits(16)],
        pattern: r"\b62\d{2}(?:(?:[\x20./_\t|-]|\x20{2,3}|\x20-\x20|\x20\|\x20|\r?\n|\r)?\d{4}){3}\b",
        validate: Some(luhn),
    },
    Spec {
        name: "iban",
        category: Pii,
        // Ten digits in a row, or the country code and check digits (an
        // account part with letters breaks every run of digits).
        triggers: &[Digits(10), UpperPair],
        // In any case, grouped by spaces or dashes (the validator reads
        // it upper-cased, as a bank does).
        pattern: concat!(
            r"(?i)\b(?:",
            iban_countries!(),
            r")\d{2}(?:[ -]?[A-Z0-9]{4}){2,7}(?:[ -]?[A-Z0-9]{1,4})?\b"
        ),
        validate: Some(iban),
    },
    Spec {
        name: "us_bank_routing",
        category: Pii,
        triggers: &[WordThen(&["routing", "aba"], DigitWithin(40))],
        pattern: r"(?i)\b(?:routing|aba)(?:\s*(?:no|number|#))?\W{0,5}(\d{9})\b",
        validate: Some(routing),
    },
    Spec {
        name: "swift_bic",
        category: Pii,
        triggers: &[Word(&["swift", "bic"])],
        pattern: r"(?i)\b(?:swift|bic)(?:\s*code)?\W{0,5}([A-Z]{4}[A-Z]{2}[A-Z0-9]{2}(?:[A-Z0-9]{3})?)\b",
        validate: None,
    },
    Spec {
        name: "date_of_birth",
        category: Pii,
        triggers: &[WordThen(
            &["dob", "d.o.b.", "date of birth", "birth", "born"],
            DigitWithin(40),
        )],
        pattern: r"(?i)\b(?:dob|d\.o\.b\.|date of birth|birth ?date|born(?: on)?)\W{0,5}(\d{1,4}[./-]\d{1,2}[./-]\d{1,4})",
        validate: Some(date),
    },
    Spec {
        name: "ipv4_address",
        category: Pii,
        triggers: &[DottedQuad],
        pattern: r"\b(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}\b",
        validate: Some(ipv4),
    },
    Spec {
        name: "ipv6_address",
        category: Pii,
        triggers: &[Byte(Ipv6Colon)],
        pattern: r"(?i)(?:^|[^0-9a-z:])([0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7})",
        validate: Some(ipv6),
    },
    Spec {
        name: "passport_number",
        category: Pii,
        triggers: &[Word(&["passport"])],
        pattern: r"(?i)\bpassport(?:\s*(?:no|number|num|#))?\W{0,5}([A-Z0-9]{6,9})\b",
        validate: Some(has_digit),
    },
    Spec {
        name: "national_id",
        category: Pii,
        triggers: &[Word(&[
            "national id",
            "national_id",
            "id |number",
            "id_|number",
            "personalausweis",
            "identity card",
            "identity_card",
            "cedula",
            "dni",
        ])],
        pattern: r"(?i)\b(?:national id|id number|personalausweis(?:nummer)?|identity card|cedula|dni)(?:\s*(?:no|number|#))?\W{0,5}([A-Z0-9]{8,12})\b",
        validate: Some(has_digit),
    },
    Spec {
        name: "uk_nino",
        category: Pii,
        triggers: &[UpperPair],
        pattern: r"\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b",
        validate: None,
    },
    Spec {
        name: "spain_dni",
        category: Pii,
        triggers: &[ConsecutiveDigits(8)],
        pattern: r"\b\d{8}[A-HJ-NP-TV-Z]\b",
        validate: Some(dni),
    },
    Spec {
        name: "canada_sin",
        category: Pii,
        triggers: &[WordThen(
            &["sin", "social insurance", "social_insurance"],
            DigitWithin(40),
        )],
        pattern: r"(?i)\b(?:sin|social insurance(?: number)?)\W{0,5}(\d{3}[ -]?\d{3}[ -]?\d{3})\b",
        validate: Some(sin),
    },
    Spec {
        name: "india_aadhaar",
        category: Pii,
        triggers: &[Word(&["aadhaar", "aadhar"])],
        pattern: r"(?i)\baadha?ar(?:\s*(?:no|number))?\W{0,5}([2-9]\d{3}\s?\d{4}\s?\d{4})\b",
        validate: None,
    },
    Spec {
        name: "us_driver_license",
        category: Pii,
        triggers: &[WordThen(&["driver"], Near("licen", 12))],
        pattern: r"(?i)\bdriver'?s?\s*licen[cs]e(?:\s*(?:no|number|#))?\W{0,5}([A-Z0-9]{5,13})\b",
        validate: Some(has_digit),
    },
    // ---- secrets ----
    Spec {
        name: "aws_access_key_id",
        category: Sec,
        triggers: &[Word(&["akia", "asia", "abia", "acca"])],
        pattern: r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b",
        validate: None,
    },
    Spec {
        name: "aws_secret_access_key",
        category: Sec,
        triggers: &[Word(&[
            "aws_secret",
            "awssecret",
            "secret_access",
            "secretaccess",
        ])],
        pattern: r#"(?i)(?:^|[^a-z0-9])(?:aws_?secret(?:_?access)?_?key|secret_?access_?key)\W{0,5}([A-Za-z0-9/+=]{40})\b"#,
        validate: Some(secret_like),
    },
    Spec {
        name: "gcp_api_key",
        category: Sec,
        triggers: &[Word(&["aiza"])],
        pattern: r"\bAIza[0-9A-Za-z_-]{35}\b",
        validate: None,
    },
    Spec {
        name: "gcp_service_account_key",
        category: Sec,
        triggers: &[Word(&["service_account"])],
        pattern: r#""type"\s*:\s*"service_account""#,
        validate: None,
    },
    Spec {
        name: "azure_storage_key",
        category: Sec,
        triggers: &[Byte(AccountKeyEq)],
        pattern: r"(?i)AccountKey=([A-Za-z0-9+/]{86}==)",
        validate: None,
    },
    Spec {
        name: "azure_sas_token",
        category: Sec,
        triggers: &[Word(&["sv="])],
        pattern: r"(?i)\bsv=\d{4}-\d{2}-\d{2}&.*?\bsig=[A-Za-z0-9%/+=]{30,}",
        validate: None,
    },
    Spec {
        name: "github_pat",
        category: Sec,
        triggers: &[Word(&["ghp_"])],
        pattern: r"\bghp_[A-Za-z0-9]{36}\b",
        validate: None,
    },
    Spec {
        name: "github_oauth",
        category: Sec,
        triggers: &[Word(&["gho_"])],
        pattern: r"\bgho_[A-Za-z0-9]{36}\b",
        validate: None,
    },
    Spec {
        name: "github_app_token",
        category: Sec,
        triggers: &[Word(&["ghu_", "ghs_"])],
        pattern: r"\bgh[us]_[A-Za-z0-9]{36}\b",
        validate: None,
    },
    Spec {
        name: "github_refresh_token",
        category: Sec,
        triggers: &[Word(&["ghr_"])],
        pattern: r"\bghr_[A-Za-z0-9]{36,76}\b",
        validate: None,
    },
    Spec {
        name: "github_fine_grained_pat",
        category: Sec,
        triggers: &[Word(&["github_pat_"])],
        pattern: r"\bgithub_pat_[A-Za-z0-9_]{82}\b",
        validate: None,
    },
    Spec {
        name: "gitlab_pat",
        category: Sec,
        triggers: &[Word(&["glpat-"])],
        pattern: r"\bglpat-[A-Za-z0-9_-]{20}\b",
        validate: None,
    },
    Spec {
        name: "slack_token",
        category: Sec,
        triggers: &[Word(&["xoxb-", "xoxa-", "xoxp-", "xoxr-", "xoxs-"])],
        pattern: r"\bxox[baprs]-[A-Za-z0-9-]{10,72}\b",
        validate: None,
    },
    Spec {
        name: "slack_webhook",
        category: Sec,
        triggers: &[Word(&["hooks.slack.com"])],
        pattern: r"https://hooks\.slack\.com/services/T[A-Z0-9]{8,10}/B[A-Z0-9]{8,10}/[A-Za-z0-9]{24}",
        validate: None,
    },
    Spec {
        name: "stripe_live_key",
        category: Sec,
        triggers: &[Word(&["sk_live_", "rk_live_"])],
        pattern: r"\b[rs]k_live_[A-Za-z0-9]{24,99}\b",
        validate: None,
    },
    Spec {
        name: "stripe_test_key",
        category: Sec,
        triggers: &[Word(&["sk_test_"])],
        pattern: r"\bsk_test_[A-Za-z0-9]{24,99}\b",
        validate: None,
    },
    Spec {
        name: "openai_api_key",
        category: Sec,
        triggers: &[WordThen(&["sk-"], Token(20))],
        pattern: r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}T3BlbkFJ[A-Za-z0-9_-]{20,}\b|\bsk-[A-Za-z0-9]{48}\b",
        validate: None,
    },
    Spec {
        name: "anthropic_api_key",
        category: Sec,
        triggers: &[Word(&["sk-ant-"])],
        pattern: r"\bsk-ant-(?:api|admin)\d{2}-[A-Za-z0-9_-]{80,100}\b",
        validate: None,
    },
    Spec {
        name: "npm_token",
        category: Sec,
        triggers: &[Word(&["npm_"])],
        pattern: r"\bnpm_[A-Za-z0-9]{36}\b",
        validate: None,
    },
    Spec {
        name: "pypi_token",
        category: Sec,
        triggers: &[Word(&["pypi-"])],
        pattern: r"\bpypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}",
        validate: None,
    },
    Spec {
        name: "twilio_api_key",
        category: Sec,
        triggers: &[WordExact(&["SK"], LowerHex(32))],
        pattern: r"\bSK[0-9a-f]{32}\b",
        validate: None,
    },
    Spec {
        name: "twilio_account_sid",
        category: Sec,
        triggers: &[WordExact(&["AC"], LowerHex(32))],
        pattern: r"\bAC[0-9a-f]{32}\b",
        validate: None,
    },
    Spec {
        name: "sendgrid_api_key",
        category: Sec,
        triggers: &[Word(&["sg."])],
        pattern: r"\bSG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}\b",
        validate: None,
    },
    Spec {
        name: "mailgun_api_key",
        category: Sec,
        triggers: &[WordThen(&["key-"], LowerHex(32))],
        pattern: r"\bkey-[0-9a-f]{32}\b",
        validate: None,
    },
    Spec {
        name: "jwt",
        category: Sec,
        triggers: &[Word(&["eyj"])],
        pattern: r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}",
        validate: Some(jwt),
    },
    Spec {
        name: "pem_private_key",
        category: Sec,
        // The header in any case and spacing a reader still takes for one;
        // redaction extends the match over the key's body (see
        // `guards::dlp::key_body`).
        // `BEGIN` may stand apart from the dashes (`----- BEGIN`, a line
        // break between): the word alone wakes it.
        triggers: &[WordThen(&["---begin", "begin"], Near("private", 40))],
        pattern: r"(?i)-{3,8}\s{0,4}BEGIN\s{1,4}(?:(?:RSA|EC|DSA|OPENSSH|ENCRYPTED|PGP)\s{1,4})?PRIVATE\s{1,4}KEY(?:\s{1,4}BLOCK)?\s{0,4}-{3,8}",
        validate: None,
    },
    Spec {
        name: "database_url_with_password",
        category: Sec,
        triggers: &[WordThen(
            &[
                "postgres",
                "mysql",
                "mariadb",
                "mongodb",
                "redis",
                "amqp",
                "mssql",
                "sqlserver",
                "clickhouse",
            ],
            Near("://", 8),
        )],
        pattern: r"(?i)\b(?:postgres(?:ql)?|mysql|mariadb|mongodb(?:\+srv)?|rediss?|amqps?|mssql|sqlserver|clickhouse)://[^\s:/@]+:([^\s@/]+)@[^\s/]+",
        validate: Some(|p| !p.is_empty() && !p.starts_with('$') && !p.starts_with('<')),
    },
    Spec {
        name: "password_assignment",
        category: Sec,
        triggers: &[WordThen(
            &[
                "password",
                "passwd",
                "pwd",
                "secret",
                "client_secret",
                "api_key",
                "api-key",
                "apikey",
                "access_token",
                "access-token",
                "accesstoken",
                "auth_token",
                "auth-token",
                "authtoken",
            ],
            Assignment,
        )],
        pattern: r#"(?i)\b(?:password|passwd|pwd|secret|client_secret|api[_-]?key|access[_-]?token|auth[_-]?token)\b["']?\s*[:=]\s*["']?([^\s"',;}]{8,})"#,
        validate: Some(secret_like),
    },
    Spec {
        name: "digitalocean_token",
        category: Sec,
        triggers: &[Word(&["dop_v1_"])],
        pattern: r"\bdop_v1_[a-f0-9]{64}\b",
        validate: None,
    },
    Spec {
        name: "shopify_token",
        category: Sec,
        triggers: &[Word(&["shpat_", "shpss_", "shpca_", "shppa_"])],
        pattern: r"\bshp(?:at|ss|ca|pa)_[a-fA-F0-9]{32}\b",
        validate: None,
    },
    Spec {
        name: "huggingface_token",
        category: Sec,
        triggers: &[Word(&["hf_"])],
        pattern: r"\bhf_[A-Za-z0-9]{34,}\b",
        validate: None,
    },
    Spec {
        name: "databricks_token",
        category: Sec,
        triggers: &[Word(&["dapi"])],
        pattern: r"\bdapi[a-f0-9]{32}\b",
        validate: None,
    },
    Spec {
        name: "linear_api_key",
        category: Sec,
        triggers: &[Word(&["lin_api_"])],
        pattern: r"\blin_api_[A-Za-z0-9]{40}\b",
        validate: None,
    },
    Spec {
        name: "age_secret_key",
        category: Sec,
        triggers: &[Word(&["age-secret-key-1"])],
        pattern: r"\bAGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}",
        validate: None,
    },
    Spec {
        name: "vault_token",
        category: Sec,
        triggers: &[Word(&["hvs."])],
        pattern: r"\bhvs\.[A-Za-z0-9_-]{90,}",
        validate: None,
    },
    Spec {
        name: "telegram_bot_token",
        category: Sec,
        triggers: &[Byte(TelegramColon)],
        pattern: r"\b\d{8,10}:AA[0-9A-Za-z_-]{33}\b",
        validate: None,
    },
    Spec {
        name: "discord_webhook",
        category: Sec,
        triggers: &[Word(&["discord"])],
        pattern: r"https://(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks/\d+/[A-Za-z0-9_-]{60,}",
        validate: None,
    },
    Spec {
        name: "square_token",
        category: Sec,
        triggers: &[Word(&["sq0atp-", "sq0csp-"])],
        pattern: r"\bsq0(?:atp|csp)-[0-9A-Za-z_-]{22,43}\b",
        validate: None,
    },
    // ---- prompt injection ----
    Spec {
        name: "injection_instruction_override",
        category: Inj,
        triggers: &[WordThen(&["ignore", "disregard", "forget"], OverridePhrase)],
        pattern: r"(?i)\b(?:ignore|disregard|forget)\s+(?:all\s+|any\s+|the\s+)?(?:previous|prior|above|earlier|preceding)\s+(?:instructions|prompts|messages|rules|directions)",
        validate: None,
    },
    Spec {
        name: "injection_role_marker",
        category: Inj,
        triggers: &[
            Byte(AngleMarker),
            Byte(HashMarker),
            Word(&["[inst]", "[/inst]"]),
            WordThen(&["system"], Colon),
        ],
        pattern: r"(?i)<\|im_start\|>|\[/?INST\]|###\s*system|</?system>|^\s*system\s*:|</s>",
        validate: None,
    },
    Spec {
        name: "injection_new_persona",
        category: Inj,
        triggers: &[Word(&["you are now ", "act as ", "new instructions"])],
        pattern: r"(?i)\byou are now (?:a|an|the|in)\b|\bnew instructions\s*:|\bact as (?:an? )?(?:unrestricted|jailbroken|dan)\b",
        validate: None,
    },
    Spec {
        name: "injection_hidden_tag_chars",
        category: Inj,
        triggers: &[Byte(TagChar)],
        pattern: r"[\x{E0000}-\x{E007F}]+",
        validate: None,
    },
    Spec {
        name: "injection_zero_width_run",
        category: Inj,
        triggers: &[Byte(ZeroWidth)],
        pattern: r"[\x{200B}\x{200C}\x{200D}\x{2060}\x{FEFF}]{3,}",
        validate: Some(zero_width_run),
    },
    Spec {
        name: "injection_markdown_exfiltration",
        category: Inj,
        triggers: &[Byte(BangBracket)],
        pattern: r"!\[[^\]]*\]\(\s*https?://[^)\s]+\?[^)\s]*=[^)\s]*\)",
        validate: None,
    },
];
