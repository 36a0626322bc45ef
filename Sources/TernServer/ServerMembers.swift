// The server's side of membership changes: outbound peer links follow the configuration in
// effect (Raft's, from the log), not `--peers`, which only seeds a new group's first
// configuration. A node not yet in its configuration (started with `--join`, or removed) also
// links to peers that announced their endpoint in an authenticated handshake, so that it can
// answer the leader that is adding it.
import Foundation
import Logging
import NIOCore
import NIOPosix
import TernProtocol
import TernProtocolNIO
import TernRaft

extension TernServer {
    /// This node's own endpoint as its peers should dial it.
    var advertisedEndpoint: String {
        if let e = node.replica.raft.membership.member(config.id)?.endpoint, !e.isEmpty { return e }
        return config.peers[config.id] ?? config.listen
    }

    /// Makes the outbound links match the configuration in effect (loop only).
    func syncLinks() {
        let m = node.replica.raft.membership
        linkedMembership = m
        linkedLeader = node.replica.raft.leader
        var wanted: [NodeID: String] = [:]
        // The leader that is removing itself leads until the removal commits: its followers,
        // whose configuration no longer names it, keep answering it.
        if let leader = linkedLeader, leader != config.id, m.member(leader) == nil, let e = links[leader]?.endpoint ?? announced[leader] {
            wanted[leader] = config.dial[leader] ?? config.dial[NodeID(e)] ?? e
        }
        for member in m.members where member.id != config.id {
            let e = member.endpoint.isEmpty ? (config.peers[member.id] ?? announced[member.id] ?? "") : member.endpoint
            if !e.isEmpty { wanted[member.id] = config.dial[member.id] ?? config.dial[NodeID(e)] ?? e }
        }
        if m.member(config.id) == nil {
            for (peer, e) in announced where wanted[peer] == nil && peer != config.id { wanted[peer] = config.dial[peer] ?? config.dial[NodeID(e)] ?? e }
        }
        for peer in links.keys.sorted() where wanted[peer] != links[peer]!.endpoint {
            links.removeValue(forKey: peer)!.stop()
            if wanted[peer] == nil { logger.info("peer \(peer) left the configuration: link closed") }
        }
        for peer in wanted.keys.sorted() where links[peer] == nil {
            let link = PeerLink(
                id: config.id, peer: peer, endpoint: wanted[peer]!, advertise: advertisedEndpoint, secrets: peerSecrets, group: group, logger: logger)
            links[peer] = link
            link.start()
        }
    }

    /// `--join`: asks the member at `endpoint` for the group's members (plain client protocol;
    /// best effort) and says what this node waits for.
    func describeGroup(at endpoint: String) {
        let logger = self.logger
        let id = config.id
        let listen = config.listen
        DispatchQueue.global().async {
            do {
                let list = try MemberQuery.fetch(endpoint)
                let names = list.members.map { "\($0.id)\($0.learner ? " (learner)" : "")" }.joined(separator: ", ")
                if list.members.contains(where: { $0.id == id.name }) {
                    logger.info("--join \(endpoint): \(id) is already a member of \(list.leader.isEmpty ? "the" : "\(list.leader)'s") group (\(names))")
                } else {
                    logger.notice(
                        "--join \(endpoint): the group is \(names), leader \(list.leader.isEmpty ? "unknown" : list.leader); \(id) waits to be added: tern admin member add \(id) --endpoint \(listen)"
                    )
                }
            } catch {
                logger.warning("--join \(endpoint): could not ask for the group's members (\(error)); \(id) waits to be added all the same")
            }
        }
    }
}

/// One `memberList` request on a plain connection, blocking (`--join`'s look at the group).
enum MemberQuery {
    static func fetch(_ endpoint: String) throws -> MemberList {
        guard let (host, port) = parseEndpoint(endpoint) else { throw ServerError("\(endpoint) is not host:port") }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let answer = group.next().makePromise(of: Frame.self)
        let channel = try ClientBootstrap(group: group)
            .connectTimeout(.seconds(5))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(codec: FrameCodec())))
                    try channel.pipeline.syncOperations.addHandler(AnswerHandler(promise: answer))
                }
            }
            .connect(host: host, port: port).wait()
        defer { channel.close(promise: nil) }
        var buffer = channel.allocator.buffer(capacity: 64)
        buffer.writeFrame(Frame(opcode: Opcode.memberList.rawValue, requestID: 1, body: Empty().encoded()))
        try channel.writeAndFlush(buffer).wait()
        channel.eventLoop.scheduleTask(in: .seconds(5)) { answer.fail(ServerError("no answer within 5 s")) }
        let frame = try answer.futureResult.wait()
        if frame.flags.contains(.error) {
            let e = ErrorBody.decode(frame.body)
            throw ServerError(e.map { "\($0.code): \($0.message)" } ?? "an error that does not decode")
        }
        return try MemberList.decode(frame.body)
    }

    final class AnswerHandler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = Frame
        let promise: EventLoopPromise<Frame>
        init(promise: EventLoopPromise<Frame>) { self.promise = promise }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) { promise.succeed(unwrapInboundIn(data)) }
        func channelInactive(context: ChannelHandlerContext) { promise.fail(ServerError("the connection closed")) }
        func errorCaught(context: ChannelHandlerContext, error: Error) { promise.fail(error) }
    }
}
