//! Why a patch document was not read.
//!
//! Every message names the operation index and the rule that failed, never the offending text:
//! patches carry patient data, and these errors reach logs and audit records.

use thiserror::Error;

/// Why a patch document was not read. The caller denies the request on every one.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PatchError {
    /// A JSON Patch document must be an array of operation objects.
    #[error("JSON Patch document is not an array of operations (RFC 6902 section 3)")]
    NotAnArray {},

    /// One JSON Patch operation or one FHIRPath Patch `operation` parameter (0-based).
    #[error("patch operation {index}: {problem}")]
    Operation {
        index: usize,
        problem: OperationProblem,
    },

    /// A merge patch writes a `reference` key holding a number or boolean.
    #[error("merge patch writes a `reference` that is not text")]
    MergeReferenceNotText {},

    /// A FHIRPath Patch document must be a `Parameters` resource.
    #[error("FHIRPath Patch document is not a Parameters resource")]
    NotParameters {},

    /// Members other than these carry nothing a patch may use, and `implicitRules` could change
    /// the meaning of the whole document.
    #[error("FHIRPath Patch Parameters has a member other than resourceType, id, meta, parameter")]
    ParametersMember {},

    /// `Parameters.parameter` is absent or neither a list nor one parameter.
    #[error("FHIRPath Patch Parameters has no parameter list")]
    ParameterList {},
}

/// What is wrong with one operation (JSON Patch) or `operation` parameter (FHIRPath Patch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum OperationProblem {
    #[error("is not a JSON object")]
    NotAnObject,
    #[error("has no `op` member")]
    MissingOp,
    #[error("`op` is not one of add, remove, replace, move, copy, test")]
    UnknownOp,
    #[error("has no `path` member")]
    MissingPath,
    #[error("move and copy need a `from` member")]
    MissingFrom,
    #[error("add, replace and test need a `value` member")]
    MissingValue,
    #[error(
        "`{member}` is not a JSON Pointer (RFC 6901: empty, or `/` tokens, escapes ~0 ~1 only)"
    )]
    BadPointer { member: PointerMember },
    /// RFC 6902 section 4 lists the members of each op.
    #[error("has a member its `op` does not take")]
    ExtraMember,
    /// A `reference` written as a number or boolean.
    #[error("writes a `reference` that is not text")]
    ReferenceNotText,
    #[error("parameter is not named `operation`")]
    NotNamedOperation,
    #[error("parameter has members other than name and part")]
    ParameterMember,
    /// `part` is absent or neither a list nor one part.
    #[error("parameter has no part list")]
    PartList,
    /// A part, or a nested value part, is not an object or has no name.
    #[error("a part is not an object with a name")]
    UnnamedPart,
    #[error("a part is not one of type, path, name, value, index, source, destination")]
    UnknownPart,
    #[error("part `{part}` appears more than once")]
    DuplicatePart { part: PartName },
    #[error("its type needs a `{part}` part")]
    MissingPart { part: PartName },
    #[error("its type does not take a `{part}` part")]
    PartNotAllowed { part: PartName },
    /// The part does not hold exactly its one typed value.
    #[error("part `{part}` must hold only {}", .part.holds())]
    PartValue { part: PartName },
    #[error("`type` is not one of add, insert, delete, replace, move")]
    UnknownType,
    /// The `name` part, or a nested part's name.
    #[error("a name is not an element name ([A-Za-z_][A-Za-z0-9_]*, optionally [x])")]
    BadName,
    /// Not exactly one `value[x]` or nested `part` list, or other members beside `name`.
    #[error("a value part must hold a name and exactly one value[x] or part list")]
    ValueShape,
    #[error("path does not start with the target resource type")]
    PathNotOfType,
    /// Only `add` (with a `name`) may act on the resource itself.
    #[error("path names the whole resource, which only add may")]
    PathIsType,
    #[error("path {problem}")]
    UnreadablePath { problem: FhirPathProblem },
}

/// Which JSON Patch member holds a pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PointerMember {
    #[error("path")]
    Path,
    #[error("from")]
    From,
}

/// The parts of a FHIRPath Patch operation (<http://hl7.org/fhir/R4/fhirpatch.html>, table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PartName {
    #[error("type")]
    Type,
    #[error("path")]
    Path,
    #[error("name")]
    Name,
    #[error("value")]
    Value,
    #[error("index")]
    Index,
    #[error("source")]
    Source,
    #[error("destination")]
    Destination,
}

/// Why a FHIRPath patch path cannot be followed (the subset is in `fhirpath_path.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FhirPathProblem {
    #[error("has a character outside element steps, [n] and function calls")]
    Character,
    #[error("has a `.` without an element name after it")]
    EmptyStep,
    /// `Observation.descendants()`: we cannot tell what it reaches.
    #[error("starts with a function instead of an element")]
    FirstStepFunction,
    #[error("calls a function other than where, first, last, single, ofType")]
    UnknownFunction,
    #[error("calls a function with the wrong number of arguments")]
    Arguments,
    #[error("has unbalanced parentheses or quotes")]
    Unbalanced,
    #[error("has a comment or double quote inside function arguments")]
    Comment,
    #[error("has an index that is not [digits]")]
    BadIndex,
}

impl PartName {
    const ALL: [PartName; 7] = [
        Self::Type,
        Self::Path,
        Self::Name,
        Self::Value,
        Self::Index,
        Self::Source,
        Self::Destination,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Type => "type",
            Self::Path => "path",
            Self::Name => "name",
            Self::Value => "value",
            Self::Index => "index",
            Self::Source => "source",
            Self::Destination => "destination",
        }
    }

    pub(super) fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|part| part.as_str() == name)
    }

    /// What the spec's table (and its Parameters encoding) says the part holds.
    fn holds(self) -> &'static str {
        match self {
            Self::Type => "a valueCode",
            Self::Path | Self::Name => "a valueString",
            Self::Value => "one value[x] or a part list",
            Self::Index | Self::Source | Self::Destination => {
                "a valueInteger (a number or digits, 0 to 2147483647)"
            }
        }
    }
}
