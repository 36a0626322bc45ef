// A node's registration with the name servers (docs/architecture.md, "Many groups"): while the
// node leads its group, it tells every name server its group's members and topics every
// `periodMillis`, and at once when they change (a topic created, a member added, a new term).
import Foundation
import Logging
import NIOConcurrencyHelpers
import TernClient
import TernNameServer
import TernProtocol
import TernServer

final class Registrar: Sendable {
    static let periodMillis: Int64 = 10_000
    let server: TernServer
    let nameServers: NameServers
    let secret: [UInt8]?
    let logger: Logger
    private let task = NIOLockedValueBox<Task<Void, Never>?>(nil)

    init(server: TernServer, nameservers: [String], secret: [UInt8]?, logger: Logger) throws {
        self.server = server
        nameServers = try NameServers(endpoints: nameservers)
        self.secret = secret
        self.logger = logger
    }

    func start() {
        let t = Task { await self.run() }
        task.withLockedValue { $0 = t }
    }

    func stop() async {
        task.withLockedValue { $0 }?.cancel()
        await nameServers.shutdown()
    }

    /// What the registration says apart from its version (which moves with every entry applied).
    private static func content(_ r: GroupRegistration) -> GroupRegistration {
        var c = r
        c.version = 0
        return c
    }

    private func run() async {
        let clock = ContinuousClock()
        var lastSent: GroupRegistration?
        var lastAt = clock.now
        var failing: Set<String> = []
        while !Task.isCancelled {
            let current: GroupRegistration?? = try? await server.inspect { node, _ in node.registration }.get()
            if let reg = current.flatMap({ $0 }) {
                let due = lastSent.map { Self.content($0) != Self.content(reg) } ?? true
                if due || clock.now - lastAt >= .milliseconds(Self.periodMillis) {
                    var signed = reg
                    if let secret { signed.sign(secret: secret) }
                    for (endpoint, error) in await nameServers.register(signed) {
                        if let error {
                            if failing.insert(endpoint).inserted { logger.warning("cannot register with name server \(endpoint): \(error)") }
                        } else if failing.remove(endpoint) != nil {
                            logger.notice("registered with name server \(endpoint) again")
                        }
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
