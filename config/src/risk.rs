//! `Risk`: the tiers a tool's calls are judged by (catalog, approvals, DLP,
//! audit). A leaf: access and guards both read it.

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Risk {
    Low,
    Medium,
    High,
    Critical,
}

impl Risk {
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Low => "LOW",
            Risk::Medium => "MEDIUM",
            Risk::High => "HIGH",
            Risk::Critical => "CRITICAL",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "LOW" => Some(Risk::Low),
            "MEDIUM" => Some(Risk::Medium),
            "HIGH" => Some(Risk::High),
            "CRITICAL" => Some(Risk::Critical),
            _ => None,
        }
    }
}
