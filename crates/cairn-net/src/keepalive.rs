//! A behaviour wrapper whose streams do not keep connections alive.
//!
//! libp2p keeps a connection open while any stream on it is open. Gossipsub holds one
//! long-lived stream per peer and direction, opened as soon as it has anything to say (its
//! v1.3 extensions message, our subscriptions), so every connection to a cairn peer would stay
//! open forever: Kad lookups alone would fill `max_peers`. Wrapped in [`StreamsIdle`], the
//! wrapped protocol's streams are ignored by that rule and the connection stays open only
//! while the protocol's handler asks for it (gossipsub: while the peer is in one of our meshes)
//! or another protocol is busy; otherwise the idle timeout applies as before.

use std::task::{Context, Poll};

use libp2p::{
    Multiaddr, PeerId,
    core::{Endpoint, transport::PortUse, upgrade},
    swarm::{
        ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
        NetworkBehaviour, Stream, SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent,
        ToSwarm,
        handler::{
            ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound,
            InboundUpgradeSend, ListenUpgradeError, OutboundUpgradeSend, UpgradeInfoSend,
        },
    },
};

/// Wraps a behaviour so that its streams do not count for connection keep-alive.
#[derive(Debug)]
pub(crate) struct StreamsIdle<B>(pub(crate) B);

impl<B> StreamsIdle<B> {
    pub(crate) fn get_mut(&mut self) -> &mut B {
        &mut self.0
    }

    pub(crate) fn get(&self) -> &B {
        &self.0
    }
}

impl<B: NetworkBehaviour> NetworkBehaviour for StreamsIdle<B> {
    type ConnectionHandler = IdleHandler<B::ConnectionHandler>;
    type ToSwarm = B::ToSwarm;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.0
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.0
            .handle_established_inbound_connection(connection_id, peer, local_addr, remote_addr)
            .map(IdleHandler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.0.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.0
            .handle_established_outbound_connection(
                connection_id,
                peer,
                addr,
                role_override,
                port_use,
            )
            .map(IdleHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.0.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.0
            .on_connection_handler_event(peer_id, connection_id, event);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        self.0.poll(cx)
    }
}

/// The connection handler of [`StreamsIdle`].
#[derive(Debug)]
pub(crate) struct IdleHandler<H>(H);

impl<H: ConnectionHandler> ConnectionHandler for IdleHandler<H> {
    type FromBehaviour = H::FromBehaviour;
    type ToBehaviour = H::ToBehaviour;
    type InboundProtocol = Idle<H::InboundProtocol>;
    type OutboundProtocol = Idle<H::OutboundProtocol>;
    type InboundOpenInfo = H::InboundOpenInfo;
    type OutboundOpenInfo = H::OutboundOpenInfo;

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol, Self::InboundOpenInfo> {
        self.0.listen_protocol().map_upgrade(Idle)
    }

    fn connection_keep_alive(&self) -> bool {
        self.0.connection_keep_alive()
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<
        ConnectionHandlerEvent<Self::OutboundProtocol, Self::OutboundOpenInfo, Self::ToBehaviour>,
    > {
        self.0.poll(cx).map(|event| event.map_protocol(Idle))
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Option<Self::ToBehaviour>> {
        self.0.poll_close(cx)
    }

    fn on_behaviour_event(&mut self, event: Self::FromBehaviour) {
        self.0.on_behaviour_event(event);
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<
            Self::InboundProtocol,
            Self::OutboundProtocol,
            Self::InboundOpenInfo,
            Self::OutboundOpenInfo,
        >,
    ) {
        let inner = match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound { protocol, info }) => {
                ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound { protocol, info })
            }
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol,
                info,
            }) => {
                ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound { protocol, info })
            }
            ConnectionEvent::AddressChange(change) => ConnectionEvent::AddressChange(change),
            ConnectionEvent::DialUpgradeError(DialUpgradeError { info, error }) => {
                ConnectionEvent::DialUpgradeError(DialUpgradeError { info, error })
            }
            ConnectionEvent::ListenUpgradeError(ListenUpgradeError { info, error }) => {
                ConnectionEvent::ListenUpgradeError(ListenUpgradeError { info, error })
            }
            ConnectionEvent::LocalProtocolsChange(change) => {
                ConnectionEvent::LocalProtocolsChange(change)
            }
            ConnectionEvent::RemoteProtocolsChange(change) => {
                ConnectionEvent::RemoteProtocolsChange(change)
            }
            // Events added by later libp2p versions are not ours to interpret.
            _ => return,
        };
        self.0.on_connection_event(inner);
    }
}

/// An upgrade whose stream is ignored for keep-alive.
#[derive(Debug, Clone)]
pub(crate) struct Idle<U>(U);

impl<U: UpgradeInfoSend> upgrade::UpgradeInfo for Idle<U> {
    type Info = U::Info;
    type InfoIter = U::InfoIter;

    fn protocol_info(&self) -> Self::InfoIter {
        self.0.protocol_info()
    }
}

impl<U: InboundUpgradeSend> upgrade::InboundUpgrade<Stream> for Idle<U> {
    type Output = U::Output;
    type Error = U::Error;
    type Future = U::Future;

    fn upgrade_inbound(self, mut socket: Stream, info: Self::Info) -> Self::Future {
        socket.ignore_for_keep_alive();
        self.0.upgrade_inbound(socket, info)
    }
}

impl<U: OutboundUpgradeSend> upgrade::OutboundUpgrade<Stream> for Idle<U> {
    type Output = U::Output;
    type Error = U::Error;
    type Future = U::Future;

    fn upgrade_outbound(self, mut socket: Stream, info: Self::Info) -> Self::Future {
        socket.ignore_for_keep_alive();
        self.0.upgrade_outbound(socket, info)
    }
}
