//! The connection table: one [`Slot`] per descriptor the watcher took over, indexed by the
//! slot index of its [`ConnId`] and checked against its generation, so a freed handle (or a
//! stale readiness token, or a late message) can never reach a later connection.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::Weak;

use crossbeam_channel::Sender;

use super::files::FileState;
use crate::conn::{ConnId, ConnShared};
use crate::lane::Lane;

/// Everything the engine keeps per connection.
pub(crate) struct Slot {
    pub(crate) id: ConnId,
    /// The handles' shared part, for closing the submit-side fast path before the descriptor
    /// closes (`crate::lane`).
    pub(crate) handle: Weak<ConnShared>,
    pub(crate) fd: OwnedFd,
    pub(crate) is_socket: bool,
    /// Per direction: the slab keys of its requests, front first (served FIFO).
    pub(crate) queues: [VecDeque<usize>; 2],
    /// Per direction: the front request is in the driver's hands (io_uring: in the kernel).
    pub(crate) in_flight: [bool; 2],
    /// Per direction (readiness drivers): an edge came while nothing was queued, and no
    /// attempt has met EAGAIN since. A request that met EAGAIN on the submitting thread is
    /// attempted again when queued only if this is set: otherwise no data (or room) came
    /// after its attempt, or the edge that announces it is still to be served and will find
    /// it queued.
    pub(crate) edge: [bool; 2],
    /// Listed in the engine's starved list: the front reader waits for swap space.
    pub(crate) starved: bool,
    /// Released (free, drop, detach, close): ending its requests; the descriptor closes once
    /// none is in the driver's hands.
    pub(crate) closing: bool,
    /// A `detach` waiting for the descriptor.
    pub(crate) detach: Option<Sender<Option<OwnedFd>>>,
    /// File requests' state, once there are any (boxed: sockets do not pay for it).
    pub(crate) file: Option<Box<FileState>>,
}

impl Slot {
    pub(crate) fn new(id: ConnId, fd: OwnedFd, is_socket: bool, handle: Weak<ConnShared>) -> Self {
        Slot {
            id,
            handle,
            fd,
            is_socket,
            queues: [VecDeque::new(), VecDeque::new()],
            in_flight: [false; 2],
            // Unknown until the first EAGAIN: attempt.
            edge: [true; 2],
            starved: false,
            closing: false,
            detach: None,
            file: None,
        }
    }

    pub(crate) fn queue(&mut self, lane: Lane) -> &mut VecDeque<usize> {
        &mut self.queues[lane as usize]
    }

    /// The file state, made on first use.
    pub(crate) fn files(&mut self) -> &mut FileState {
        self.file.get_or_insert_with(Default::default)
    }

    /// File requests in the driver's hands.
    pub(crate) fn files_in_flight(&self) -> usize {
        self.file.as_ref().map_or(0, |f| f.in_flight)
    }

    /// Keys of every pending request: both queues, then the file requests.
    pub(crate) fn keys(&self) -> impl Iterator<Item = usize> + '_ {
        self.queues
            .iter()
            .flatten()
            .chain(self.file.iter().flat_map(|f| f.pending.iter()))
            .copied()
    }

    /// Nothing of this connection is in the driver's hands: its descriptor may close.
    pub(crate) fn idle(&self) -> bool {
        !self.in_flight[0] && !self.in_flight[1] && self.files_in_flight() == 0
    }
}

/// Slots by index; a slot is found only under the generation it was made with.
#[derive(Default)]
pub(crate) struct Table {
    slots: Vec<Option<Slot>>,
}

impl Table {
    /// The index of live connection `id`, if `id` still names it.
    pub(crate) fn index_of(&self, id: ConnId) -> Option<usize> {
        let i = id.index as usize;
        match self.slots.get(i) {
            Some(Some(s)) if s.id == id => Some(i),
            _ => None,
        }
    }

    pub(crate) fn insert(&mut self, slot: Slot) {
        let i = slot.id.index as usize;
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || None);
        }
        self.slots[i] = Some(slot);
    }

    pub(crate) fn get(&self, i: usize) -> Option<&Slot> {
        self.slots.get(i).and_then(Option::as_ref)
    }

    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut Slot> {
        self.slots.get_mut(i).and_then(Option::as_mut)
    }

    pub(crate) fn take(&mut self, i: usize) -> Option<Slot> {
        self.slots.get_mut(i).and_then(Option::take)
    }

    /// One past the highest index ever used.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }
}
