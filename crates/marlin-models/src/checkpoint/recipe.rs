//! What to do with each tensor when quantizing: a default scheme, the tensors kept as the
//! source stores them, and per-layer overrides by glob. The recipe is written into the
//! checkpoint's `quantization_config` so a checkpoint says how it was made.

use std::fmt;
use std::str::FromStr;

use marlin_quant::{Format, Group, QuantError, Scheme};
use serde_json::{Value, json};
use thiserror::Error;

/// Why a recipe could not be built from the user's words.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum RecipeError {
    #[error(
        "--layer '{0}' is not GLOB=FORMAT[:GROUP] (e.g. 'model.layers.*.mlp.*=int4:32' or \
         'lm_head=int8')"
    )]
    RuleSyntax(String),
    #[error("--layer '{rule}': {source}")]
    RuleScheme { rule: String, source: QuantError },
    #[error("unknown preset '{0}': known presets are {list}", list = PRESETS.join(", "))]
    UnknownPreset(String),
    #[error("unknown method '{0}': expected rtn, gptq or awq")]
    UnknownMethod(String),
}

/// How weights are rounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Round to nearest, each group's scale from its own weights.
    Rtn,
    /// GPTQ on calibration activations (marlin_quant::gptq), decoder layer by decoder layer.
    Gptq,
    /// AWQ: activation-aware per-channel scaling searched per layer, then round to nearest
    /// with searched group ranges (checkpoint/awq.rs).
    Awq,
}

impl FromStr for Method {
    type Err = RecipeError;
    fn from_str(s: &str) -> Result<Self, RecipeError> {
        match s.to_ascii_lowercase().as_str() {
            "rtn" => Ok(Method::Rtn),
            "gptq" => Ok(Method::Gptq),
            "awq" => Ok(Method::Awq),
            _ => Err(RecipeError::UnknownMethod(s.to_string())),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Method::Rtn => f.write_str("rtn"),
            Method::Gptq => f.write_str("gptq"),
            Method::Awq => f.write_str("awq"),
        }
    }
}

/// What becomes of one tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Stored as the source stores it: dense in its dtype, or packed bit for bit when the
    /// source already holds it in one of our formats (GGUF Q4_0, Q4_1, Q8_0).
    Keep,
    Quant(Scheme),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Keep => f.write_str("keep"),
            Target::Quant(s) => write!(f, "{s}"),
        }
    }
}

/// `GLOB=TARGET`: every tensor whose name (or name without `.weight`) the glob matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub pattern: String,
    pub target: Target,
}

impl FromStr for Rule {
    type Err = RecipeError;
    /// `GLOB=FORMAT[:GROUP]`, FORMAT a format name or `keep`, GROUP 16/32/64/128/channel.
    fn from_str(s: &str) -> Result<Self, RecipeError> {
        let syntax = || RecipeError::RuleSyntax(s.to_string());
        let (pattern, target) = s.rsplit_once('=').ok_or_else(syntax)?;
        if pattern.is_empty() || target.is_empty() {
            return Err(syntax());
        }
        let target = parse_target(target).map_err(|source| RecipeError::RuleScheme {
            rule: s.to_string(),
            source,
        })?;
        Ok(Rule {
            pattern: pattern.to_string(),
            target,
        })
    }
}

/// `keep`, `FORMAT` (its default group) or `FORMAT:GROUP`.
fn parse_target(s: &str) -> Result<Target, QuantError> {
    if s.eq_ignore_ascii_case("keep") {
        return Ok(Target::Keep);
    }
    let (format, group) = match s.split_once(':') {
        Some((f, g)) => (f.parse::<Format>()?, Some(g.parse::<Group>()?)),
        None => (s.parse::<Format>()?, None),
    };
    let scheme = match group {
        Some(g) => Scheme::new(format, g)?,
        None => Scheme::of(format),
    };
    Ok(Target::Quant(scheme))
}

/// Tensors that stay as stored unless a rule names them: the token embedding and the output
/// head (quantizing them costs the most quality per byte saved), and MoE router gates (tiny, and
/// a wrong expert choice is costly). Norms and biases are 1-D and never quantized.
pub const KEPT_BY_DEFAULT: [&str; 3] = [
    "model.embed_tokens.weight",
    "lm_head.weight",
    "*.mlp.gate.weight",
];

/// The presets `--preset` knows (docs/quantization.md describes each).
pub const PRESETS: [&str; 2] = ["int4-mixed", "int2-mixed"];

/// The whole plan: every 2-D weight gets `default`, except the ones kept by default
/// ([`Recipe::kept_by_default`]), then `rules` apply in order, the last match winning.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    pub method: Method,
    pub default: Scheme,
    pub rules: Vec<Rule>,
    /// The preset the rules came from, recorded in the checkpoint.
    pub preset: Option<String>,
    /// Prune every matrix the recipe quantizes to 2:4 (half of each 4 consecutive weights
    /// along K), stored compressed (docs/formats.md, "2:4 sparsity").
    pub sparse_2_4: bool,
}

impl Recipe {
    /// RTN to `default` with no overrides.
    pub fn new(default: Scheme) -> Self {
        Recipe {
            method: Method::Rtn,
            default,
            rules: Vec::new(),
            preset: None,
            sparse_2_4: false,
        }
    }

    /// A preset for a model of `layers` decoder layers: its default scheme and its rules.
    /// - `int4-mixed`: MLP int4 g32; attention and the first and last layers int8 g32
    ///   (the layers quantization hurts most stay near lossless).
    /// - `int2-mixed`: MLP int2 g32; attention int4 g32; the first and last layers int8 g32.
    ///
    /// In mixture-of-experts models the shared experts (`mlp.shared_expert.*`, Qwen-MoE;
    /// `mlp.shared_experts.*`, DeepSeek), which every token runs through, take attention's
    /// scheme; the routed experts (`mlp.experts.*`), most of the weights, the MLP's.
    pub fn preset(name: &str, layers: usize) -> Result<Self, RecipeError> {
        let scheme = |f, g| Scheme::new(f, Group::Size(g)).expect("preset schemes are valid");
        let (mlp, attention) = match name {
            "int4-mixed" => (scheme(Format::Int4, 32), scheme(Format::Int8, 32)),
            "int2-mixed" => (scheme(Format::Int2, 32), scheme(Format::Int4, 32)),
            _ => return Err(RecipeError::UnknownPreset(name.to_string())),
        };
        let edge = scheme(Format::Int8, 32);
        let mut rules: Vec<Rule> = [
            "model.layers.*.self_attn.*",
            "model.layers.*.mlp.shared_expert*",
        ]
        .into_iter()
        .map(|pattern| Rule {
            pattern: pattern.into(),
            target: Target::Quant(attention),
        })
        .collect();
        for layer in [0, layers.saturating_sub(1)] {
            rules.push(Rule {
                pattern: format!("model.layers.{layer}.*"),
                target: Target::Quant(edge),
            });
        }
        rules.dedup();
        Ok(Recipe {
            method: Method::Rtn,
            default: mlp,
            rules,
            preset: Some(name.to_string()),
            sparse_2_4: false,
        })
    }

    /// Whether `name` is one of [`KEPT_BY_DEFAULT`].
    pub fn kept_by_default(name: &str) -> bool {
        KEPT_BY_DEFAULT.iter().any(|p| glob_match(p, name))
    }

    /// What becomes of tensor `name` of `shape`: only matrices (2-D) are ever quantized.
    pub fn target(&self, name: &str, shape: &[usize]) -> Target {
        if shape.len() != 2 {
            return Target::Keep;
        }
        let mut target = if Self::kept_by_default(name) {
            Target::Keep
        } else {
            Target::Quant(self.default)
        };
        for rule in &self.rules {
            if matches_name(&rule.pattern, name) {
                target = rule.target;
            }
        }
        target
    }

    /// The checkpoint's `quantization_config` block (docs/checkpoint-format.md).
    pub fn to_json(&self) -> Value {
        let rules: Vec<Value> = self
            .rules
            .iter()
            .map(|r| match r.target {
                Target::Keep => json!({"pattern": r.pattern, "format": "keep"}),
                Target::Quant(s) => json!({
                    "pattern": r.pattern,
                    "format": s.format().name(),
                    "group_size": group_json(s.group()),
                }),
            })
            .collect();
        json!({
            "quant_method": super::QUANT_METHOD,
            "version": super::VERSION,
            "method": self.method.to_string(),
            "format": self.default.format().name(),
            "group_size": group_json(self.default.group()),
            "preset": self.preset,
            "sparsity": self.sparse_2_4.then_some(super::spec::SPARSITY_2_4),
            "kept_by_default": KEPT_BY_DEFAULT,
            "overrides": rules,
        })
    }
}

/// A group size in JSON: the number, or `"channel"`.
pub(crate) fn group_json(g: Group) -> Value {
    match g {
        Group::Size(n) => json!(n),
        Group::PerChannel => json!("channel"),
    }
}

/// Whether `pattern` matches the tensor name or the name without its `.weight` (so
/// `lm_head` and `model.layers.*.mlp.*` both read naturally).
pub fn matches_name(pattern: &str, name: &str) -> bool {
    glob_match(pattern, name)
        || name
            .strip_suffix(".weight")
            .is_some_and(|m| glob_match(pattern, m))
}

/// Shell-style glob over the whole text: `*` matches any run of characters (dots included),
/// `?` exactly one; everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // The classic two-pointer match: on a mismatch, retry from just after the last `*`, which
    // then swallows one more character. Linear in practice, never exponential.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*", ""));
        assert!(glob_match(
            "model.layers.*.mlp.*",
            "model.layers.12.mlp.up_proj.weight"
        ));
        assert!(!glob_match(
            "model.layers.1.*",
            "model.layers.12.mlp.up_proj.weight"
        ));
        assert!(glob_match(
            "model.layers.1?.*",
            "model.layers.12.mlp.up_proj.weight"
        ));
        assert!(glob_match("*q_proj", "model.layers.0.self_attn.q_proj"));
        assert!(!glob_match(
            "*q_proj",
            "model.layers.0.self_attn.q_proj.weight"
        ));
        assert!(matches_name(
            "*q_proj",
            "model.layers.0.self_attn.q_proj.weight"
        ));
        assert!(matches_name("lm_head", "lm_head.weight"));
        assert!(!glob_match("a*b*c", "aXbXd"));
        assert!(glob_match("a*b*c", "aXbXbc"));
    }

    #[test]
    fn rules_parse_and_the_last_match_wins() {
        let mut r = Recipe::new(Scheme::of(Format::Int4));
        r.rules
            .push("model.layers.*.self_attn.*=int8".parse().unwrap());
        r.rules
            .push("model.layers.0.*=fp8:channel".parse().unwrap());
        r.rules.push("lm_head=int8:128".parse().unwrap());
        let t = |n: &str| r.target(n, &[8, 8]);
        assert_eq!(
            t("model.layers.3.mlp.up_proj.weight"),
            Target::Quant(Scheme::of(Format::Int4))
        );
        assert_eq!(
            t("model.layers.3.self_attn.q_proj.weight"),
            Target::Quant(Scheme::of(Format::Int8))
        );
        let fp8 = Scheme::new(Format::Fp8, Group::PerChannel).unwrap();
        assert_eq!(
            t("model.layers.0.self_attn.q_proj.weight"),
            Target::Quant(fp8)
        );
        assert_eq!(t("model.embed_tokens.weight"), Target::Keep);
        assert_eq!(t("model.layers.3.mlp.gate.weight"), Target::Keep);
        assert_eq!(
            t("model.layers.3.mlp.gate_proj.weight"),
            Target::Quant(Scheme::of(Format::Int4))
        );
        let int8_128 = Scheme::new(Format::Int8, Group::Size(128)).unwrap();
        assert_eq!(t("lm_head.weight"), Target::Quant(int8_128));
        assert_eq!(r.target("model.norm.weight", &[8]), Target::Keep);
        assert!("x".parse::<Rule>().is_err());
        assert!("x=int5".parse::<Rule>().is_err());
        assert!("x=int4:48".parse::<Rule>().is_err());
        assert_eq!("x=keep".parse::<Rule>().unwrap().target, Target::Keep);
    }

    #[test]
    fn presets_cover_the_edges() {
        let r = Recipe::preset("int4-mixed", 30).unwrap();
        let t = |n: &str| r.target(n, &[8, 8]);
        let (int4, int8) = (
            Target::Quant(Scheme::of(Format::Int4)),
            Target::Quant(Scheme::of(Format::Int8)),
        );
        assert_eq!(t("model.layers.5.mlp.down_proj.weight"), int4);
        assert_eq!(t("model.layers.5.self_attn.o_proj.weight"), int8);
        assert_eq!(t("model.layers.0.mlp.down_proj.weight"), int8);
        assert_eq!(t("model.layers.29.mlp.down_proj.weight"), int8);
        // Mixture of experts: shared experts as attention, routed ones as the MLP.
        assert_eq!(t("model.layers.5.mlp.shared_expert.up_proj.weight"), int8);
        assert_eq!(
            t("model.layers.5.mlp.shared_experts.down_proj.weight"),
            int8
        );
        assert_eq!(t("model.layers.5.mlp.experts.7.up_proj.weight"), int4);
        assert!(Recipe::preset("nope", 30).is_err());
        assert_eq!("gptq".parse::<Method>().unwrap(), Method::Gptq);
        assert_eq!("AWQ".parse::<Method>().unwrap(), Method::Awq);
        assert!("spqr".parse::<Method>().is_err());
    }
}
