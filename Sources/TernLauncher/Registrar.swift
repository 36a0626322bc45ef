// A node's registration with the name servers (docs/architecture.md, "Many groups"): while the
// node leads its group, it tells every name server its group's members and topics every
// `periodMillis`, and at once when they change (a topic created, a member added, a new term).
// A name given for the name servers that resolves to several addresses (a Kubernetes headless
// service in front of a Deployment of name servers) is registered with at every address, looked
// up again every period.
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOPosix
import TernClient
import TernNameServer
import TernProtocol
import TernServer

final class Registrar: Sendable {
    static let periodMillis: Int64 = 10_000
    let server: TernServer
    let configured: [String]
    /// The registration key to sign with, as of each registration (nil: unsigned).
    let key: (@Sendable () -> [UInt8])?
    let logger: Logger
    private let task = NIOLockedValueBox<Task<Void, Never>?>(nil)
    private let client = NIOLockedValueBox<NameServers?>(nil)

    init(server: TernServer, nameservers: [String], key: (@Sendable () -> [UInt8])?, logger: Logger) throws {
        self.server = server
        configured = nameservers
        _ = try NameServers(endpoints: nameservers)  // refuses a malformed list now
        self.key = key
        self.logger = logger
    }

    /// Every address the configured names stand for (a name that does not resolve stays as given).
    static func expand(_ endpoints: [String]) -> [String] {
        var out: [String] = []
        for e in endpoints {
            guard let (host, port) = parseEndpoint(e) else { continue }
            var hints = addrinfo()
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            var list: UnsafeMutablePointer<addrinfo>?
            guard getaddrinfo(host, String(port), &hints, &list) == 0, let first = list else {
                out.append(e)
                continue
            }
            defer { freeaddrinfo(list) }
            var found: [String] = []
            var cursor: UnsafeMutablePointer<addrinfo>? = first
            while let ai = cursor {
                var name = [CChar](repeating: 0, count: Int(NI_MAXHOST))
                if getnameinfo(ai.pointee.ai_addr, ai.pointee.ai_addrlen, &name, socklen_t(name.count), nil, 0, NI_NUMERICHOST) == 0 {
                    let ip = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                    let text = ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)"
                    if !found.contains(text) { found.append(text) }
                }
                cursor = ai.pointee.ai_next
            }
            out += found.isEmpty ? [e] : found
        }
        return out
    }

    /// The client for the name servers' current addresses (made anew when they change).
    private func nameServers() async -> NameServers? {
        // getaddrinfo blocks (for seconds when a DNS server does not answer): it runs on NIO's
        // threads for blocking work, never on the concurrency pool the gRPC front shares.
        let configured = self.configured
        let addresses = (try? await NIOThreadPool.singleton.runIfActive { Self.expand(configured) }) ?? configured
        let (current, old) = client.withLockedValue { c -> (NameServers?, NameServers?) in
            if let c, c.endpoints == addresses { return (c, nil) }
            let made = try? NameServers(endpoints: addresses)
            defer { c = made }
            return (made, c)
        }
        if let old {
            await old.shutdown()
            if old.endpoints != addresses { logger.notice("name servers now at \(addresses.joined(separator: ", "))") }
        }
        return current
    }

    func start() {
        let t = Task { await self.run() }
        task.withLockedValue { $0 = t }
    }

    func stop() async {
        task.withLockedValue { $0 }?.cancel()
        await client.withLockedValue { $0 }?.shutdown()
    }

    /// What the registration says apart from its version (which moves with every entry applied).
    private static func content(_ r: GroupRegistration) -> GroupRegistration {
        var c = r
        c.version = 0
        c.sentAt = 0
        return c
    }

    private func run() async {
        let clock = ContinuousClock()
        var lastSent: GroupRegistration?
        var lastAt = clock.now
        var failing: Set<String> = []
        var truncatedWarned = false
        while !Task.isCancelled {
            let current: GroupRegistration?? = try? await server.inspect { node, _ in node.registration }.get()
            if let reg = current.flatMap({ $0 }) {
                let due = lastSent.map { Self.content($0) != Self.content(reg) } ?? true
                if due || clock.now - lastAt >= .milliseconds(Self.periodMillis), let nameServers = await nameServers() {
                    var signed = reg
                    // A frame holds 8 MiB: with more topics than fit (tens of thousands), the
                    // registration carries those that fit, in name order, and says so in the log.
                    let limit = Int(FrameCodec().maxBodyBytes) - 4096
                    if signed.encoded().count > limit {
                        var size = 64 + signed.members.reduce(0) { $0 + 4 + $1.id.utf8.count + $1.endpoint.utf8.count }
                        let fitting = signed.topics.prefix { t in
                            size += 7 + t.name.utf8.count
                            return size <= limit
                        }
                        if !truncatedWarned {
                            logger.error(
                                "the group has \(signed.topics.count) topics, more than a registration holds: \(fitting.count) registered, the rest cannot be routed"
                            )
                            truncatedWarned = true
                        }
                        signed.topics = Array(fitting)
                    }
                    if let key { signed.sign(secret: key()) }
                    var anyTook = false
                    for (endpoint, error) in await nameServers.register(signed) {
                        if let error {
                            if failing.insert(endpoint).inserted { logger.warning("cannot register with name server \(endpoint): \(error)") }
                        } else {
                            anyTook = true
                            if failing.remove(endpoint) != nil { logger.notice("registered with name server \(endpoint) again") }
                        }
                    }
                    // None took it: try again in half a second, not in a period.
                    guard anyTook else {
                        try? await Task.sleep(for: .milliseconds(500))
                        continue
                    }
                    if lastSent == nil || lastSent?.term != reg.term {
                        logger.notice("registering broker group \(reg.group) (term \(reg.term)) with \(nameServers.endpoints.joined(separator: ", "))")
                    }
                    lastSent = reg
                    lastAt = clock.now
                }
            } else {
                lastSent = nil
            }
            try? await Task.sleep(for: .milliseconds(500))
        }
    }
}
