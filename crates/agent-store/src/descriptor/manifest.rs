//! The provider manifest (`provider.codefly.yaml`, schema
//! `codefly.provider-manifest/v0`) and its digest as codefly's
//! `provider/manifest` computes it.
//!
//! **The digest.** The manifest is decoded into its typed form (unknown
//! fields refused, absent fields zero), normalized (every list that is a
//! set sorted: state schema versions, permissions by id, resource types
//! and their actions and import identities, requests and their field lists,
//! origin rules and their lists, credential purposes, response schemas and
//! their fields by `version` NUL `path`, projections, the sandbox's paths
//! and sockets), and written as Go's `encoding/json` writes that struct:
//! fields in declaration order, an empty list as `null` (or left out where
//! the field is `omitempty`), no spaces, HTML characters escaped. The
//! digest is `sha256:` + the hex sha256 of those bytes, so two manifests
//! that differ only in formatting, comments or list order have one digest.
//!
//! **The YAML read here** is the block subset manifests are written in:
//! mappings, sequences (block and flow), plain, single- and double-quoted
//! scalars, comments. Anchors, aliases, tags, block scalars, complex keys,
//! multi-line plain scalars and more than one document are refused, as are
//! duplicate keys; a refused manifest is not vouched for.

use serde::de::{self, Deserializer};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

/// Why a manifest does not decode or validate.
pub(crate) type Reason = String;

// ---------------------------------------------------------------- typed form

/// `resources.Agent`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Agent {
    #[serde(deserialize_with = "string")]
    pub kind: String,
    #[serde(deserialize_with = "string")]
    pub name: String,
    #[serde(deserialize_with = "string")]
    pub version: String,
    #[serde(deserialize_with = "string")]
    pub publisher: String,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Manifest {
    #[serde(deserialize_with = "string")]
    pub schema_version: String,
    #[serde(deserialize_with = "string")]
    pub protocol_version: String,
    #[serde(deserialize_with = "u32s", serialize_with = "nullable")]
    pub state_schema_versions: Vec<u32>,
    pub agent: Agent,
    #[serde(deserialize_with = "string")]
    pub default_deletion_policy: String,
    pub permissions: Permissions,
    #[serde(deserialize_with = "list", serialize_with = "nullable")]
    pub resource_types: Vec<ResourceType>,
    #[serde(deserialize_with = "list", serialize_with = "nullable")]
    pub requests: Vec<Request>,
    #[serde(deserialize_with = "list", serialize_with = "nullable")]
    pub origin_rules: Vec<OriginRule>,
    #[serde(deserialize_with = "list", serialize_with = "nullable")]
    pub credential_purposes: Vec<CredentialPurpose>,
    #[serde(deserialize_with = "list", serialize_with = "nullable")]
    pub response_schemas: Vec<ResponseSchema>,
    #[serde(deserialize_with = "list", serialize_with = "nullable")]
    pub projections: Vec<Projection>,
    pub sandbox: Sandbox,
    pub state: State,
    #[serde(deserialize_with = "string")]
    pub diagnostic_namespace: String,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Permissions {
    #[serde(deserialize_with = "list", serialize_with = "nullable")]
    pub required: Vec<Permission>,
    #[serde(deserialize_with = "list", skip_serializing_if = "Vec::is_empty")]
    pub optional: Vec<Permission>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Permission {
    #[serde(deserialize_with = "string")]
    pub id: String,
    #[serde(deserialize_with = "string")]
    pub action: String,
    #[serde(deserialize_with = "string")]
    pub resource: String,
    #[serde(deserialize_with = "string")]
    pub resource_type: String,
    #[serde(deserialize_with = "string")]
    pub reason: String,
    #[serde(deserialize_with = "string")]
    pub risk: String,
    #[serde(deserialize_with = "string", skip_serializing_if = "String::is_empty")]
    pub credential_purpose: String,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ResourceType {
    #[serde(deserialize_with = "string")]
    pub id: String,
    #[serde(deserialize_with = "strings", serialize_with = "nullable")]
    pub actions: Vec<String>,
    #[serde(deserialize_with = "strings", skip_serializing_if = "Vec::is_empty")]
    pub import_identity: Vec<String>,
    #[serde(deserialize_with = "boolean", skip_serializing_if = "is_false")]
    pub supports_replace: bool,
    #[serde(deserialize_with = "boolean", skip_serializing_if = "is_false")]
    pub supports_delete: bool,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Request {
    #[serde(deserialize_with = "string")]
    pub id: String,
    #[serde(deserialize_with = "strings", serialize_with = "nullable")]
    pub permissions: Vec<String>,
    #[serde(deserialize_with = "string")]
    pub resource_type: String,
    #[serde(deserialize_with = "string")]
    pub action: String,
    #[serde(deserialize_with = "string")]
    pub origin_rule: String,
    #[serde(deserialize_with = "string")]
    pub operation: String,
    #[serde(deserialize_with = "string")]
    pub method: String,
    #[serde(deserialize_with = "string")]
    pub path_template: String,
    #[serde(deserialize_with = "strings", skip_serializing_if = "Vec::is_empty")]
    pub remote_id_parameters: Vec<String>,
    #[serde(deserialize_with = "strings", skip_serializing_if = "Vec::is_empty")]
    pub allowed_query_fields: Vec<String>,
    #[serde(deserialize_with = "strings", skip_serializing_if = "Vec::is_empty")]
    pub allowed_body_fields: Vec<String>,
    #[serde(deserialize_with = "strings", skip_serializing_if = "Vec::is_empty")]
    pub ownership_body_fields: Vec<String>,
    #[serde(deserialize_with = "u64_")]
    pub request_byte_budget: u64,
    #[serde(deserialize_with = "u64_")]
    pub response_byte_budget: u64,
    #[serde(deserialize_with = "boolean")]
    pub read_only: bool,
    #[serde(deserialize_with = "string")]
    pub response_schema: String,
    #[serde(deserialize_with = "strings", skip_serializing_if = "Vec::is_empty")]
    pub credential_purposes: Vec<String>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct OriginRule {
    #[serde(deserialize_with = "string")]
    pub id: String,
    #[serde(deserialize_with = "strings", serialize_with = "nullable")]
    pub defaults: Vec<String>,
    #[serde(deserialize_with = "strings", serialize_with = "nullable")]
    pub schemes: Vec<String>,
    #[serde(deserialize_with = "strings", serialize_with = "nullable")]
    pub host_patterns: Vec<String>,
    #[serde(deserialize_with = "u32s", serialize_with = "nullable")]
    pub ports: Vec<u32>,
    #[serde(deserialize_with = "string")]
    pub binding_override: String,
    #[serde(deserialize_with = "strings", serialize_with = "nullable")]
    pub private_network_classes: Vec<String>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct CredentialPurpose {
    #[serde(deserialize_with = "string")]
    pub id: String,
    #[serde(deserialize_with = "string")]
    pub minimum_scope: String,
    #[serde(deserialize_with = "string")]
    pub permitted_consumer: String,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ResponseSchema {
    #[serde(deserialize_with = "string")]
    pub id: String,
    #[serde(deserialize_with = "list", serialize_with = "nullable")]
    pub fields: Vec<ResponseField>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ResponseField {
    pub selector: Selector,
    #[serde(deserialize_with = "string")]
    pub disposition: String,
    #[serde(deserialize_with = "string", skip_serializing_if = "String::is_empty")]
    pub purpose: String,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Selector {
    #[serde(deserialize_with = "string")]
    pub version: String,
    #[serde(deserialize_with = "string")]
    pub path: String,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Projection {
    #[serde(deserialize_with = "string")]
    pub id: String,
    #[serde(deserialize_with = "string")]
    pub contract: String,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Sandbox {
    #[serde(deserialize_with = "strings", skip_serializing_if = "Vec::is_empty")]
    pub read_paths: Vec<String>,
    #[serde(deserialize_with = "strings", skip_serializing_if = "Vec::is_empty")]
    pub write_paths: Vec<String>,
    #[serde(deserialize_with = "string", skip_serializing_if = "String::is_empty")]
    pub network: String,
    #[serde(deserialize_with = "strings", skip_serializing_if = "Vec::is_empty")]
    pub unix_sockets: Vec<String>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct State {
    #[serde(deserialize_with = "u32s", serialize_with = "nullable")]
    pub schema_versions: Vec<u32>,
    #[serde(deserialize_with = "boolean")]
    pub import_identity: bool,
    #[serde(deserialize_with = "boolean")]
    pub replace: bool,
    #[serde(deserialize_with = "boolean")]
    pub delete: bool,
    #[serde(deserialize_with = "boolean")]
    pub stepwise_upgrade: bool,
}

// ------------------------------------------------------- load and digest

impl Manifest {
    /// Decodes `bytes` (YAML) and checks the manifest's own rules that the
    /// descriptor relies on.
    pub(crate) fn load(bytes: &[u8]) -> Result<Manifest, Reason> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())?;
        let value = yaml::parse(text)?;
        let m: Manifest = serde_json::from_value(value).map_err(|e| e.to_string())?;
        m.validate()?;
        Ok(m)
    }

    fn validate(&self) -> Result<(), Reason> {
        let fail = |s: &str| Err(s.to_owned());
        if self.schema_version != super::MANIFEST_SCHEMA_V0 {
            return fail("unsupported schema_version");
        }
        if self.protocol_version != super::PROTOCOL_V0 {
            return fail("unsupported protocol_version");
        }
        if self.state_schema_versions != [1] || self.state.schema_versions != [1] {
            return fail("state_schema_versions and state.schema_versions must be [1]");
        }
        let a = &self.agent;
        if a.kind != "codefly:provider" {
            return fail("agent.kind must be \"codefly:provider\"");
        }
        if a.publisher.is_empty() || a.name.is_empty() || a.version.is_empty() {
            return fail("agent publisher, name and version are required");
        }
        if a.version == "latest" {
            return fail("agent.version must be concrete");
        }
        if self.default_deletion_policy != "retain" {
            return fail("default_deletion_policy must be \"retain\"");
        }
        if !matches!(self.sandbox.network.as_str(), "" | "deny" | "loopback") {
            return fail("sandbox.network must be deny or loopback");
        }
        if !self.sandbox.unix_sockets.is_empty() {
            return fail("sandbox.unix_sockets must be empty");
        }
        if self.resource_types.is_empty() || self.permissions.required.is_empty() {
            return fail("resource_types and permissions.required must not be empty");
        }
        Ok(())
    }

    /// The canonical bytes: normalized, then written as Go's
    /// `encoding/json` writes the struct.
    pub(crate) fn canonical(&self) -> Vec<u8> {
        let mut n = self.clone();
        n.state_schema_versions.sort_unstable();
        n.permissions.required.sort_by(|a, b| a.id.cmp(&b.id));
        n.permissions.optional.sort_by(|a, b| a.id.cmp(&b.id));
        for r in &mut n.resource_types {
            r.actions.sort();
            r.import_identity.sort();
        }
        n.resource_types.sort_by(|a, b| a.id.cmp(&b.id));
        for r in &mut n.requests {
            r.permissions.sort();
            r.remote_id_parameters.sort();
            r.allowed_query_fields.sort();
            r.allowed_body_fields.sort();
            r.ownership_body_fields.sort();
            r.credential_purposes.sort();
        }
        n.requests.sort_by(|a, b| a.id.cmp(&b.id));
        for o in &mut n.origin_rules {
            o.defaults.sort();
            o.schemes.sort();
            o.host_patterns.sort();
            o.ports.sort_unstable();
            o.private_network_classes.sort();
        }
        n.origin_rules.sort_by(|a, b| a.id.cmp(&b.id));
        n.credential_purposes.sort_by(|a, b| a.id.cmp(&b.id));
        for s in &mut n.response_schemas {
            s.fields.sort_by(|a, b| {
                (&a.selector.version, 0u8, &a.selector.path).cmp(&(
                    &b.selector.version,
                    0u8,
                    &b.selector.path,
                ))
            });
        }
        n.response_schemas.sort_by(|a, b| a.id.cmp(&b.id));
        n.projections.sort_by(|a, b| a.id.cmp(&b.id));
        n.sandbox.read_paths.sort();
        n.sandbox.write_paths.sort();
        n.sandbox.unix_sockets.sort();
        n.state.schema_versions.sort_unstable();
        super::go_escape(&serde_json::to_string(&n).unwrap_or_default()).into_bytes()
    }
}

// ------------------------------------------ Go zero-value field decoding

fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v = Option::<Vec<Option<String>>>::deserialize(d)?.unwrap_or_default();
    Ok(v.into_iter().map(Option::unwrap_or_default).collect())
}

fn list<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

fn number<E: de::Error, T: std::str::FromStr>(s: Option<String>) -> Result<T, E> {
    match s {
        None => "0".parse().map_err(|_| E::custom("not a number")),
        Some(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s
            .parse()
            .map_err(|_| E::custom(format!("{s:?} is out of range"))),
        Some(s) => Err(E::custom(format!("{s:?} is not a decimal integer"))),
    }
}

fn u64_<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    number(Option::<String>::deserialize(d)?)
}

fn u32s<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
    let v = Option::<Vec<Option<String>>>::deserialize(d)?.unwrap_or_default();
    v.into_iter().map(number).collect()
}

fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match Option::<String>::deserialize(d)?.as_deref() {
        None | Some("false" | "False" | "FALSE") => Ok(false),
        Some("true" | "True" | "TRUE") => Ok(true),
        Some(s) => Err(de::Error::custom(format!("{s:?} is not a boolean"))),
    }
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_false(b: &bool) -> bool {
    !*b
}

/// An empty list as Go writes a nil slice: `null`.
fn nullable<S: Serializer, T: Serialize>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
    if v.is_empty() {
        s.serialize_none()
    } else {
        v.serialize(s)
    }
}

mod yaml;
