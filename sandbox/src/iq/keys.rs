//! The `encrypt` namespace: a device uploads its prekeys and rotates its
//! signed prekey; asks how many the server holds and for their digest; and
//! fetches other devices' bundles (taking one one-time prekey each).

use wacore::iq::prekeys::{OneTimePreKeyNode, PreKeyBundleUserNode, SignedPreKeyNode};
use wacore::protocol::ProtocolNode as _;
use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, Node};

use super::{Answer, Asker, IqError};
use crate::accounts::{Device, PreKey, SignedPreKey};
use crate::conn::bytes;
use crate::jid::UserRef;

/// More one-time prekeys than this per device are dropped, oldest first.
const MAX_PREKEYS: usize = 2_000;

/// `<registration/><type/><identity/><list><key/>..</list><skey/>`.
pub(super) fn upload(asker: &Asker<'_>, iq: &Node) -> Answer {
    let registration = iq
        .get_optional_child("registration")
        .and_then(bytes)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .ok_or(IqError::BadRequest("registration"))?;
    let identity = iq
        .get_optional_child("identity")
        .and_then(bytes)
        .and_then(identity_key)
        .ok_or(IqError::BadRequest("identity"))?;
    let signed = signed_prekey(iq.get_optional_child("skey"))?;
    let mut fresh = Vec::new();
    for key in iq
        .get_optional_child("list")
        .map(|l| l.get_children_by_tag("key").collect::<Vec<_>>())
        .unwrap_or_default()
    {
        let key = OneTimePreKeyNode::try_from_node(key).map_err(|_| IqError::BadRequest("key"))?;
        let public = <[u8; 32]>::try_from(key.public_bytes.as_slice())
            .map_err(|_| IqError::BadRequest("key"))?;
        fresh.push(PreKey { id: key.id, public });
    }
    let stored = with_device(asker, |device| {
        if device.identity != identity {
            return Err(IqError::NotAcceptable(
                "identity differs from the paired one",
            ));
        }
        device.registration_id = u32::from_be_bytes(registration);
        device.signed_prekey = signed;
        let ids: std::collections::HashSet<u32> = fresh.iter().map(|k| k.id).collect();
        device.prekeys.retain(|k| !ids.contains(&k.id));
        device.prekeys.extend(fresh);
        let excess = device.prekeys.len().saturating_sub(MAX_PREKEYS);
        device.prekeys.drain(..excess);
        Ok(device.prekeys.len())
    })?;
    tracing::debug!(stored, "prekeys uploaded");
    asker.shared.state_changed();
    Ok(vec![])
}

/// `<rotate><skey/></rotate>`: a new signed prekey.
pub(super) fn rotate(asker: &Asker<'_>, iq: &Node) -> Answer {
    let rotate = iq.get_optional_child("rotate");
    let signed = signed_prekey(rotate.and_then(|r| r.get_optional_child("skey")))?;
    with_device(asker, |device| {
        device.signed_prekey = signed;
        Ok(())
    })?;
    asker.shared.state_changed();
    Ok(vec![])
}

/// `<count value="N"/>`: one-time prekeys left for the asking device.
pub(super) fn count(asker: &Asker<'_>) -> Answer {
    let left = with_device(asker, |device| Ok(device.prekeys.len()))?;
    Ok(vec![
        NodeBuilder::new("count")
            .attr("value", left.to_string())
            .build(),
    ])
}

/// `<digest>`: the asking device's bundle as stored, with its SHA-1, so the
/// client can check the server holds what it uploaded.
pub(super) fn digest(asker: &Asker<'_>) -> Answer {
    let node = with_device(asker, |device| {
        let publics: Vec<&[u8]> = device.prekeys.iter().map(|k| &k.public[..]).collect();
        let hash = wacore::prekeys::compute_key_bundle_digest(
            &device.identity,
            &device.signed_prekey.public,
            &device.signed_prekey.signature,
            &publics,
        );
        let ids = device
            .prekeys
            .iter()
            .map(|k| NodeBuilder::new("id").bytes(id3(k.id)).build());
        Ok(NodeBuilder::new("digest")
            .children([
                bytes_node(
                    "registration",
                    device.registration_id.to_be_bytes().to_vec(),
                ),
                bytes_node("type", vec![5]),
                bytes_node("identity", device.identity.to_vec()),
                skey_node(&device.signed_prekey),
                NodeBuilder::new("list").children(ids).build(),
                bytes_node("hash", hash),
            ])
            .build())
    })?;
    Ok(vec![node])
}

/// `<key><user jid=.. />..</key>`: one bundle per asked device, each with
/// one one-time prekey (taken from the store) when any is left.
pub(super) fn bundles(asker: &Asker<'_>, iq: &Node) -> Answer {
    let users = iq
        .get_optional_child("key")
        .map(|k| k.get_children_by_tag("user").collect::<Vec<_>>())
        .unwrap_or_default();
    let mut list = Vec::with_capacity(users.len());
    for user in users {
        let jid = user.attrs.get("jid").and_then(|v| v.to_jid());
        let Some(jid) = jid else {
            return Err(IqError::BadRequest("user jid"));
        };
        let bundle = bundle_for(asker, &jid);
        // A handed-out prekey must not be handed out again after a restart.
        asker.shared.state_changed();
        list.push(bundle.unwrap_or_else(|| {
            NodeBuilder::new("user")
                .attr("jid", jid)
                .children([NodeBuilder::new("error")
                    .attr("code", "404")
                    .attr("text", "item-not-found")
                    .build()])
                .build()
        }));
    }
    Ok(vec![NodeBuilder::new("list").children(list).build()])
}

fn bundle_for(asker: &Asker<'_>, jid: &Jid) -> Option<Node> {
    let user = UserRef::from_jid(jid)?;
    let account = asker.shared.directory.resolve(user)?;
    let node = if user.device() == 0 {
        let phone = &account.sim;
        PreKeyBundleUserNode {
            jid: jid.clone(),
            registration_id: phone.keys().registration_id,
            identity_key: phone.identity_public().to_vec(),
            signed_pre_key: skey(&phone.signed_prekey()),
            one_time_pre_key: phone
                .offer_prekey()
                .inspect_err(|e| tracing::warn!(error = %e, "phone has no prekey to offer"))
                .ok()
                .map(|k| OneTimePreKeyNode::new(k.id, k.public.to_vec())),
            device_identity: None,
        }
    } else {
        let mut state = account.lock();
        let device = state.devices.get_mut(&user.device())?;
        let one_time = device.prekeys.pop_front();
        PreKeyBundleUserNode {
            jid: jid.clone(),
            registration_id: device.registration_id,
            identity_key: device.identity.to_vec(),
            signed_pre_key: skey(&device.signed_prekey),
            one_time_pre_key: one_time.map(|k| OneTimePreKeyNode::new(k.id, k.public.to_vec())),
            device_identity: Some(device.adv_identity.clone()),
        }
    };
    Some(node.into_node())
}

/// Runs `f` on the asking device's record, under the account's lock.
fn with_device<T>(
    asker: &Asker<'_>,
    f: impl FnOnce(&mut Device) -> Result<T, IqError>,
) -> Result<T, IqError> {
    let mut state = asker.account.lock();
    let device = state
        .devices
        .get_mut(&asker.device)
        .ok_or(IqError::NotFound)?;
    f(device)
}

fn signed_prekey(node: Option<&Node>) -> Result<SignedPreKey, IqError> {
    let node = node.ok_or(IqError::BadRequest("skey"))?;
    let parsed = SignedPreKeyNode::try_from_node(node).map_err(|_| IqError::BadRequest("skey"))?;
    let public = <[u8; 32]>::try_from(parsed.public_bytes.as_slice())
        .map_err(|_| IqError::BadRequest("skey"))?;
    Ok(SignedPreKey {
        id: parsed.id,
        public,
        signature: parsed.signature,
    })
}

/// Identity keys come as 32 raw bytes, or 33 with the key-type byte.
fn identity_key(bytes: &[u8]) -> Option<[u8; 32]> {
    match bytes.len() {
        32 => bytes.try_into().ok(),
        33 if bytes[0] == 5 => bytes[1..].try_into().ok(),
        _ => None,
    }
}

fn skey(key: &SignedPreKey) -> SignedPreKeyNode {
    SignedPreKeyNode::new(key.id, key.public.to_vec(), key.signature.clone())
}

fn skey_node(key: &SignedPreKey) -> Node {
    skey(key).into_node()
}

fn bytes_node(tag: &'static str, content: Vec<u8>) -> Node {
    NodeBuilder::new(tag).bytes(content).build()
}

fn id3(id: u32) -> Vec<u8> {
    id.to_be_bytes()[1..].to_vec()
}
