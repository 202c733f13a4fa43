//! What the client knows of each room: the epoch, the last seq handed to the application,
//! and messages that arrived ahead of a gap. Pure logic, no I/O: the driver feeds it frames
//! and does what it says.

use std::collections::{BTreeMap, HashMap, HashSet};

use chat_core::protocol::{ResumePoint, RoomState};
use chat_core::{Epoch, Message, RoomId, Seq};

/// Messages kept ahead of a gap per room; later ones are fetched again with `history`.
const MAX_EARLY: usize = 10_000;
/// Messages asked for per gap-filling `history` request.
pub(crate) const FILL_PAGE: u64 = 500;

/// A room's log was reset (its epoch changed) or the user is no longer in it: the
/// application's copy is stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reset {
    /// The room.
    pub room: RoomId,
    /// The new epoch; `None` when the user is no longer a member (the room is gone from the
    /// server, or it was left on another device).
    pub epoch: Option<Epoch>,
    /// The room's latest seq under the new epoch (0 when not a member).
    pub seq: Seq,
}

/// A `history` request that fills a gap: messages after `after`, at most `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fill {
    pub(crate) room: RoomId,
    pub(crate) after: Seq,
    pub(crate) limit: u32,
}

#[derive(Debug, Default)]
struct Track {
    epoch: Option<Epoch>,
    /// The last seq handed to the application; `None` until the first message says where
    /// the room starts (a room joined on another device).
    last: Option<Seq>,
    /// The highest seq heard of.
    known: Seq,
    early: BTreeMap<Seq, Message>,
    filling: bool,
}

impl Track {
    fn at(epoch: Epoch, seq: Seq) -> Track {
        Track {
            epoch: Some(epoch),
            last: Some(seq),
            known: seq,
            early: BTreeMap::new(),
            filling: false,
        }
    }

    /// Moves contiguous early messages to `out`.
    fn drain(&mut self, out: &mut Vec<Message>) {
        while let Some(entry) = self.early.first_entry() {
            let seq = *entry.key();
            let last = self.last.unwrap_or(Seq::ZERO);
            if seq <= last {
                entry.remove();
            } else if seq == last.next() {
                out.push(entry.remove());
                self.last = Some(seq);
            } else {
                break;
            }
        }
    }

    /// The fill this room needs now, if any.
    fn fill(&mut self, room: &RoomId) -> Option<Fill> {
        let last = self.last?;
        if self.filling || self.known <= last {
            return None;
        }
        let upto = self.early.keys().next().map_or(self.known, |first| {
            Seq::new(first.get() - 1).unwrap_or(self.known)
        });
        if upto <= last {
            return None;
        }
        self.filling = true;
        Some(Fill {
            room: room.clone(),
            after: last,
            limit: u32::try_from((upto.get() - last.get()).min(FILL_PAGE)).unwrap_or(1),
        })
    }
}

/// Every room the client follows.
#[derive(Debug, Default)]
pub(crate) struct Rooms {
    map: HashMap<RoomId, Track>,
    /// Rooms this user left in this session: a push that raced the leave is not followed.
    left: HashSet<RoomId>,
}

/// What to do after a message arrived.
#[derive(Debug, Default)]
pub(crate) struct Offered {
    /// Hand these to the application, in this order.
    pub(crate) deliver: Vec<Message>,
    /// Ask the server for this gap.
    pub(crate) fill: Option<Fill>,
}

impl Rooms {
    /// The resume map for `hello`: every room with a known epoch and position.
    pub(crate) fn resume_points(&self) -> BTreeMap<RoomId, ResumePoint> {
        self.map
            .iter()
            .filter_map(|(room, track)| {
                Some((
                    room.clone(),
                    ResumePoint {
                        epoch: track.epoch.clone()?,
                        seq: track.last?,
                    },
                ))
            })
            .collect()
    }

    /// A message, pushed live, replayed, or read to fill a gap. Each seq of a room is
    /// delivered once, in order; a gap is held back and filled.
    pub(crate) fn offer(&mut self, message: Message) -> Offered {
        let room = message.room.clone();
        if self.left.contains(&room) {
            // A push racing a leave: hand it over as it is, without following the room.
            return Offered {
                deliver: vec![message],
                fill: None,
            };
        }
        // Any other room not followed yet is followed from here: a push racing a join (it
        // can come before the `member` push and the join's reply) must count, or the join's
        // reply would start the room below it and a fill would deliver it again.
        let track = self.map.entry(room.clone()).or_default();
        let seq = message.seq;
        track.known = track.known.max(seq);
        let mut offered = Offered::default();
        match track.last {
            // The first message of a room whose position was unknown: it starts here.
            None => {
                track.last = Some(seq);
                offered.deliver.push(message);
                track.drain(&mut offered.deliver);
            }
            Some(last) if seq <= last => {}
            Some(last) if seq == last.next() => {
                track.last = Some(seq);
                offered.deliver.push(message);
                track.drain(&mut offered.deliver);
            }
            Some(_) => {
                if track.early.len() < MAX_EARLY {
                    track.early.insert(seq, message);
                }
            }
        }
        offered.fill = track.fill(&room);
        offered
    }

    /// A gap-filling request finished (whatever it brought); another may be needed.
    pub(crate) fn fill_done(&mut self, room: &RoomId) -> Option<Fill> {
        let track = self.map.get_mut(room)?;
        track.filling = false;
        track.fill(room)
    }

    /// The rooms of a `hello` reply: rooms resumed under the same epoch replay by
    /// themselves; a changed epoch, a vanished room, or a room with messages held under an
    /// epoch never learned is a [`Reset`]; new rooms start at their latest seq.
    pub(crate) fn on_hello(&mut self, rooms: &[RoomState]) -> Vec<Reset> {
        // A new session: no push of a room left in an earlier one can come any more.
        self.left.clear();
        let mut resets = Vec::new();
        let mut seen = HashSet::new();
        for state in rooms {
            seen.insert(state.room.clone());
            let track = self.map.entry(state.room.clone()).or_default();
            track.filling = false;
            match (&track.epoch, track.last) {
                (Some(epoch), Some(_)) if *epoch == state.epoch => {}
                // Messages held under an epoch never learned: whether the server kept
                // this log or started a new one cannot be told, so it is a reset (a
                // needless one at worst; skipping the new log's first messages as
                // duplicates would lose them).
                (None, Some(_)) => {
                    resets.push(Reset {
                        room: state.room.clone(),
                        epoch: Some(state.epoch.clone()),
                        seq: state.seq,
                    });
                    *track = Track::at(state.epoch.clone(), state.seq);
                }
                (None, None) => *track = Track::at(state.epoch.clone(), state.seq),
                (Some(_), _) => {
                    resets.push(Reset {
                        room: state.room.clone(),
                        epoch: Some(state.epoch.clone()),
                        seq: state.seq,
                    });
                    *track = Track::at(state.epoch.clone(), state.seq);
                }
            }
        }
        let gone: Vec<RoomId> = self
            .map
            .keys()
            .filter(|r| !seen.contains(*r))
            .cloned()
            .collect();
        for room in gone {
            self.map.remove(&room);
            resets.push(Reset {
                room,
                epoch: None,
                seq: Seq::ZERO,
            });
        }
        resets
    }

    /// The reply to `join`: a new room starts at its latest seq; a room followed under
    /// another epoch is reset.
    pub(crate) fn on_join(&mut self, state: &RoomState) -> Option<Reset> {
        self.left.remove(&state.room);
        let track = self.map.entry(state.room.clone()).or_default();
        match &track.epoch {
            Some(epoch) if *epoch == state.epoch => None,
            None => {
                track.epoch = Some(state.epoch.clone());
                if track.last.is_none() {
                    *track = Track::at(state.epoch.clone(), state.seq);
                }
                None
            }
            Some(_) => {
                *track = Track::at(state.epoch.clone(), state.seq);
                Some(Reset {
                    room: state.room.clone(),
                    epoch: Some(state.epoch.clone()),
                    seq: state.seq,
                })
            }
        }
    }

    /// This user became a member on another device (or through someone's `to` send): the
    /// room is followed from its first message. `true` when its epoch is unknown (ask
    /// with a `join`, and give the reply to [`Rooms::learn_epoch`]).
    pub(crate) fn on_joined_elsewhere(&mut self, room: &RoomId) -> bool {
        self.left.remove(room);
        self.map.entry(room.clone()).or_default().epoch.is_none()
    }

    /// The epoch of a room followed since it was joined elsewhere. Unlike
    /// [`Rooms::on_join`], the position is kept: the room is followed from its first
    /// message. A room followed under another epoch is reset.
    pub(crate) fn learn_epoch(&mut self, state: &RoomState) -> Option<Reset> {
        let track = self.map.get_mut(&state.room)?;
        match &track.epoch {
            Some(epoch) if *epoch == state.epoch => None,
            None => {
                track.epoch = Some(state.epoch.clone());
                None
            }
            Some(_) => {
                *track = Track::at(state.epoch.clone(), state.seq);
                Some(Reset {
                    room: state.room.clone(),
                    epoch: Some(state.epoch.clone()),
                    seq: state.seq,
                })
            }
        }
    }

    /// This user left the room.
    pub(crate) fn on_left(&mut self, room: &RoomId) {
        self.map.remove(room);
        self.left.insert(room.clone());
    }

    /// The last seq handed to the application for `room`.
    #[cfg(test)]
    pub(crate) fn last(&self, room: &RoomId) -> Option<Seq> {
        self.map.get(room).and_then(|t| t.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_core::{ClientMsgId, Timestamp, UserId};

    fn msg(room: &str, seq: u64) -> Message {
        Message {
            room: RoomId::new(room).unwrap(),
            seq: Seq::new(seq).unwrap(),
            from: UserId::new("u").unwrap(),
            cid: ClientMsgId::new(&format!("c{seq}")).unwrap(),
            body: String::new(),
            ts: Timestamp::EPOCH,
            meta: None,
        }
    }

    fn state(room: &str, epoch: &str, seq: u64) -> RoomState {
        RoomState {
            room: RoomId::new(room).unwrap(),
            epoch: Epoch::new(epoch).unwrap(),
            seq: Seq::new(seq).unwrap(),
            read: Seq::ZERO,
            delivered: Seq::ZERO,
        }
    }

    fn epoch(name: &str) -> Epoch {
        Epoch::new(name).unwrap()
    }

    fn seqs(messages: &[Message]) -> Vec<u64> {
        messages.iter().map(|m| m.seq.get()).collect()
    }

    #[test]
    fn delivers_in_order_once_and_fills_gaps() {
        let mut rooms = Rooms::default();
        rooms.on_hello(&[state("r", "e1", 2)]);
        assert_eq!(seqs(&rooms.offer(msg("r", 3)).deliver), [3]);
        assert!(
            rooms.offer(msg("r", 3)).deliver.is_empty(),
            "a duplicate is dropped"
        );
        let early = rooms.offer(msg("r", 7));
        assert!(early.deliver.is_empty());
        let fill = early.fill.expect("a gap asks for history");
        assert_eq!((fill.after.get(), fill.limit), (3, 3));
        assert!(
            rooms.offer(msg("r", 8)).fill.is_none(),
            "one fill at a time"
        );
        // The history reply fills 4..=6; 7 and 8 follow.
        let mut got = Vec::new();
        for seq in 4..=6 {
            got.extend(rooms.offer(msg("r", seq)).deliver);
        }
        assert_eq!(seqs(&got), [4, 5, 6, 7, 8]);
        assert!(rooms.fill_done(&RoomId::new("r").unwrap()).is_none());
    }

    #[test]
    fn pushes_racing_a_join_count_and_pushes_racing_a_leave_are_not_followed() {
        let mut rooms = Rooms::default();
        let r = RoomId::new("r").unwrap();
        rooms.on_hello(&[]);
        // The server attached this connection at #0; #1 and #2 were pushed before its
        // `member` push and its join reply.
        let mut got = Vec::new();
        for seq in 1..=2 {
            got.extend(rooms.offer(msg("r", seq)).deliver);
        }
        rooms.on_joined_elsewhere(&r);
        assert!(rooms.on_join(&state("r", "e1", 0)).is_none());
        let next = rooms.offer(msg("r", 3));
        assert!(next.fill.is_none(), "#1 and #2 are not missing");
        got.extend(next.deliver);
        assert_eq!(seqs(&got), [1, 2, 3], "once each, in order");

        rooms.on_left(&r);
        assert_eq!(seqs(&rooms.offer(msg("r", 4)).deliver), [4]);
        assert!(
            rooms.last(&r).is_none(),
            "a room left is not followed again"
        );
        assert!(rooms.resume_points().is_empty());
    }

    #[test]
    fn hello_resumes_resets_and_forgets() {
        let mut rooms = Rooms::default();
        rooms.on_hello(&[
            state("a", "e1", 5),
            state("b", "e1", 1),
            state("c", "e1", 0),
        ]);
        rooms.offer(msg("a", 6));
        let points = rooms.resume_points();
        assert_eq!(points[&RoomId::new("a").unwrap()].seq.get(), 6);
        // Reconnect: a resumed, b reset by a new epoch, c gone.
        let resets = rooms.on_hello(&[state("a", "e1", 9), state("b", "e2", 4)]);
        assert_eq!(resets.len(), 2);
        assert_eq!(resets[0].room.as_str(), "b");
        assert_eq!(resets[0].seq.get(), 4);
        assert_eq!(
            (resets[1].room.as_str(), resets[1].epoch.clone()),
            ("c", None)
        );
        assert_eq!(rooms.last(&RoomId::new("b").unwrap()).unwrap().get(), 4);
        assert!(rooms.last(&RoomId::new("c").unwrap()).is_none());
    }

    #[test]
    fn a_room_joined_elsewhere_starts_at_its_first_message_and_is_caught_up_later() {
        let mut rooms = Rooms::default();
        let r = RoomId::new("x").unwrap();
        rooms.on_joined_elsewhere(&r);
        assert!(
            rooms.resume_points().is_empty(),
            "no epoch yet: not resumable"
        );
        assert_eq!(seqs(&rooms.offer(msg("x", 10)).deliver), [10]);
        // Disconnected before its epoch was learned: the next hello cannot tell whether
        // the server kept the log (e1, up to 14) or started a new one, so it is a reset.
        let resets = rooms.on_hello(&[state("x", "e1", 14)]);
        assert_eq!(resets.len(), 1);
        assert_eq!(
            (resets[0].epoch.clone(), resets[0].seq.get()),
            (Some(epoch("e1")), 14)
        );
        assert_eq!(rooms.last(&r).unwrap().get(), 14);
    }

    #[test]
    fn the_epoch_learned_for_a_room_joined_elsewhere_keeps_its_position() {
        let mut rooms = Rooms::default();
        let r = RoomId::new("x").unwrap();
        assert!(rooms.on_joined_elsewhere(&r), "epoch unknown: ask for it");
        assert_eq!(seqs(&rooms.offer(msg("x", 1)).deliver), [1]);
        // The join reply says the room is at 3 already: 2 and 3 are still to come.
        assert!(rooms.learn_epoch(&state("x", "e1", 3)).is_none());
        assert!(
            !rooms.on_joined_elsewhere(&r),
            "epoch known: nothing to ask"
        );
        assert_eq!(seqs(&rooms.offer(msg("x", 2)).deliver), [2]);
        let points = rooms.resume_points();
        assert_eq!(points[&r].seq.get(), 2);
        // Resumed under the same epoch: no reset. Under another: a reset.
        assert!(rooms.on_hello(&[state("x", "e1", 3)]).is_empty());
        let reset = rooms
            .learn_epoch(&state("x", "e2", 1))
            .expect("another epoch");
        assert_eq!(reset.epoch, Some(epoch("e2")));
    }
}
