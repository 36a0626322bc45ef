// Cluster clients signed in as the accounts of callers that a node's side services (the HTTP
// admin API) authenticated themselves: one per account, so that the nodes check each caller's
// rights as for any client. At most `limit` are kept; one replaced (a changed secret) or evicted
// is shut down a minute later, after the calls that hold it.
import NIOConcurrencyHelpers
import NIOCore

public final class AccountClusters: Sendable {
    public static let limit = 64
    /// The secret an unknown account's proof is compared with, so that it takes as long as a
    /// known account's wrong secret.
    public static let nobody: [UInt8] = (0..<32).map { _ in UInt8.random(in: 0...255) }
    let endpoints: [String]
    let options: TernCluster.Options
    let loops: any EventLoopGroup
    private let clients = NIOLockedValueBox<(base: TernCluster?, byAccount: [String: (secret: [UInt8], cluster: TernCluster)])>((nil, [:]))
    /// Clients replaced or evicted, shut down a minute later (or at `shutdown`).
    private let retiring = NIOLockedValueBox<[TernCluster]>([])

    public init(endpoints: [String], options: TernCluster.Options, loops: any EventLoopGroup) {
        self.endpoints = endpoints
        self.options = options
        self.loops = loops
    }

    /// The client for `credentials` (nil: the one with the options' own credentials).
    public func cluster(for credentials: Credentials?) throws -> TernCluster {
        var options = self.options
        if let credentials { options.credentials = credentials }
        let known = clients.withLockedValue { all -> TernCluster? in
            guard let credentials else { return all.base }
            return all.byAccount[credentials.accessKey].flatMap { $0.secret == credentials.secret ? $0.cluster : nil }
        }
        if let known { return known }
        let made = try TernCluster(endpoints: endpoints, options: options, eventLoopGroup: loops)
        var retired: [TernCluster] = []
        let chosen = clients.withLockedValue { all -> TernCluster in
            guard let credentials else {
                if let base = all.base {
                    retired.append(made)
                    return base
                }
                all.base = made
                return made
            }
            if let known = all.byAccount[credentials.accessKey], known.secret == credentials.secret {
                retired.append(made)
                return known.cluster
            }
            if let old = all.byAccount.removeValue(forKey: credentials.accessKey) { retired.append(old.cluster) }
            if all.byAccount.count >= Self.limit, let evict = all.byAccount.keys.min(), let old = all.byAccount.removeValue(forKey: evict) {
                retired.append(old.cluster)
            }
            all.byAccount[credentials.accessKey] = (credentials.secret, made)
            return made
        }
        for old in retired {
            retiring.withLockedValue { $0.append(old) }
            Task {
                try? await Task.sleep(for: .seconds(60))
                let still = self.retiring.withLockedValue { list in
                    guard let k = list.firstIndex(where: { $0 === old }) else { return false }
                    list.remove(at: k)
                    return true
                }
                if still { await old.shutdown() }
            }
        }
        return chosen
    }

    public func shutdown() async {
        let all = clients.withLockedValue { all in
            defer { all = (nil, [:]) }
            return (all.base.map { [$0] } ?? []) + all.byAccount.values.map(\.cluster)
        }
        let retired = retiring.withLockedValue { list in
            defer { list = [] }
            return list
        }
        for c in all + retired { await c.shutdown() }
    }
}
