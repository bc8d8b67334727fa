//! Inbound messages: whatsapp-rust's durability hook.
//!
//! The client calls the hook with each batch of decrypted messages before it
//! acknowledges them to WhatsApp. The hook stores them, with their webhook
//! events, in one transaction and only then returns `Ok`: a crash before the
//! commit leaves them unacknowledged, so WhatsApp delivers them again, and
//! the store's unique key on (chat, sender, id) makes that replay harmless.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use wacore::download::Downloadable;
use wacore::proto_helpers::MessageExt;
use wacore::types::events::InboundMessage;
use wacore_binary::jid::Jid;
use waproto::whatsapp as wa;
use whatsapp_rust::client::Client;

use super::MediaWork;
use crate::media::MediaKind;
use crate::store::Store;
use crate::store::messages::NewInbound;
use crate::tenants::TenantId;

/// The durability hook of one tenant's session.
#[derive(Clone)]
pub(super) struct Inbound {
    pub store: Store,
    pub tenant: TenantId,
    pub media: MediaWork,
}

#[async_trait::async_trait]
impl whatsapp_rust::InboundDurabilityHook for Inbound {
    async fn on_messages(
        &self,
        client: Arc<Client>,
        batch: &[InboundMessage],
    ) -> anyhow::Result<()> {
        let mut rows = Vec::new();
        for m in batch {
            let Some(mut row) = to_row(m) else { continue };
            // A media message's file is fetched before the message is
            // stored, and so before WhatsApp hears that it arrived.
            if let Some(file) = media_of(m.message.get_base_message()) {
                let media =
                    super::media::fetch_inbound(&self.media, &self.tenant, &client, file).await;
                row.data.insert(
                    "media".into(),
                    serde_json::to_value(media.info(&row.message_id))?,
                );
                row.media = Some(media);
            }
            rows.push(row);
        }
        if rows.is_empty() {
            return Ok(());
        }
        let (new, unused) = self.store.store_inbound(&self.tenant, &rows).await?;
        // Files of redelivered messages, already stored once.
        for key in unused {
            if let Err(e) = self.media.storage.delete(&key).await {
                tracing::warn!(error = %e, key, "cannot delete a file fetched twice");
            }
        }
        crate::metrics::messages_received(new);
        tracing::debug!(tenant_id = %self.tenant, received = rows.len(), new, "stored inbound messages");
        Ok(())
    }
}

/// A media message's file, as the message names it.
pub(super) struct InboundFile<'a> {
    pub kind: MediaKind,
    pub downloadable: &'a dyn Downloadable,
    pub mimetype: Option<&'a str>,
    pub file_name: Option<&'a str>,
    pub voice: bool,
}

/// The file a message carries, if it is a media message.
pub(super) fn media_of(m: &wa::Message) -> Option<InboundFile<'_>> {
    fn file<'a>(
        kind: MediaKind,
        downloadable: &'a dyn Downloadable,
        mimetype: &'a Option<String>,
    ) -> InboundFile<'a> {
        InboundFile {
            kind,
            downloadable,
            mimetype: mimetype.as_deref(),
            file_name: None,
            voice: false,
        }
    }
    if let Some(image) = m.image_message.as_option() {
        Some(file(MediaKind::Image, image, &image.mimetype))
    } else if let Some(video) = m.video_message.as_option() {
        Some(file(MediaKind::Video, video, &video.mimetype))
    } else if let Some(audio) = m.audio_message.as_option() {
        Some(InboundFile {
            voice: audio.ptt == Some(true),
            ..file(MediaKind::Audio, audio, &audio.mimetype)
        })
    } else if let Some(document) = m.document_message.as_option() {
        Some(InboundFile {
            file_name: document.file_name.as_deref(),
            ..file(MediaKind::Document, document, &document.mimetype)
        })
    } else {
        m.sticker_message
            .as_option()
            .map(|sticker| file(MediaKind::Sticker, sticker, &sticker.mimetype))
    }
}

/// The row for one message, or `None` for what the inbox does not hold:
/// the account's own messages from its other devices, and protocol
/// messages (key shares, history-sync notices) that are not a user's words.
pub(super) fn to_row(m: &InboundMessage) -> Option<NewInbound> {
    let source = &m.info.source;
    if source.is_from_me {
        return None;
    }
    let message = m.message.get_base_message();
    let kind = kind_of(message)?;
    let mut data = Map::new();
    if !m.info.push_name.is_empty() {
        data.insert("push_name".into(), json!(m.info.push_name));
    }
    if source.is_group {
        data.insert("is_group".into(), Value::Bool(true));
    }
    Some(NewInbound {
        message_id: m.info.id.to_string(),
        chat_id: phone_form(&source.chat, source.sender_alt.as_ref()),
        sender_id: phone_form(&source.sender, source.sender_alt.as_ref()),
        kind: kind.to_owned(),
        text: message
            .text_content()
            .or_else(|| message.get_caption())
            .map(str::to_owned),
        timestamp: m.info.timestamp.timestamp_millis(),
        data,
        media: None,
    })
}

/// A user's JID in the phone-number form the API has always shown, when
/// WhatsApp addressed them by LID and said which number it stands for.
fn phone_form(jid: &Jid, alt: Option<&Jid>) -> String {
    match alt {
        Some(alt) if jid.is_lid() && alt.is_pn() => alt.to_non_ad_string(),
        _ => jid.to_non_ad_string(),
    }
}

/// The message's kind, named as its protobuf field is. New kinds are added
/// here; anything unrecognised is `unknown` rather than dropped.
pub(super) fn kind_of(m: &wa::Message) -> Option<&'static str> {
    let kinds: [(&'static str, bool); 18] = [
        ("conversation", m.conversation.is_some()),
        ("extendedTextMessage", m.extended_text_message.is_set()),
        ("imageMessage", m.image_message.is_set()),
        ("videoMessage", m.video_message.is_set()),
        ("audioMessage", m.audio_message.is_set()),
        ("documentMessage", m.document_message.is_set()),
        ("stickerMessage", m.sticker_message.is_set()),
        ("locationMessage", m.location_message.is_set()),
        ("liveLocationMessage", m.live_location_message.is_set()),
        ("contactMessage", m.contact_message.is_set()),
        ("contactsArrayMessage", m.contacts_array_message.is_set()),
        ("reactionMessage", m.reaction_message.is_set()),
        ("pollCreationMessage", m.poll_creation_message.is_set()),
        ("pollCreationMessageV3", m.poll_creation_message_v3.is_set()),
        ("pollUpdateMessage", m.poll_update_message.is_set()),
        (
            "buttonsResponseMessage",
            m.buttons_response_message.is_set(),
        ),
        ("listResponseMessage", m.list_response_message.is_set()),
        ("protocolMessage", m.protocol_message.is_set()),
    ];
    match kinds.iter().find(|(_, set)| *set) {
        Some(("protocolMessage", _)) => None,
        Some((kind, _)) => Some(kind),
        None => Some("unknown"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_named_after_their_fields() {
        let text = wa::Message {
            conversation: Some("halo".into()),
            ..Default::default()
        };
        assert_eq!(kind_of(&text), Some("conversation"));
        let extended = wa::Message {
            extended_text_message: buffa::MessageField::some(wa::message::ExtendedTextMessage {
                text: Some("see https://example.com".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(kind_of(&extended), Some("extendedTextMessage"));
        assert_eq!(extended.text_content(), Some("see https://example.com"));
        let image = wa::Message {
            image_message: buffa::MessageField::some(Default::default()),
            ..Default::default()
        };
        assert_eq!(kind_of(&image), Some("imageMessage"));
        assert_eq!(kind_of(&wa::Message::default()), Some("unknown"));
        let protocol = wa::Message {
            protocol_message: buffa::MessageField::some(Default::default()),
            ..Default::default()
        };
        assert_eq!(kind_of(&protocol), None, "not a user's message");
    }
}
