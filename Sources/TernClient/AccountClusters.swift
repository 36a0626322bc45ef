// Cluster clients signed in as the accounts of callers that a node's side services (the HTTP
// admin API, the RocketMQ 5 front) authenticated themselves: one per account, so that the nodes
// check each caller's rights as for any client. At most `limit` are kept; one replaced (a
// changed secret) or evicted is shut down `retireAfter` later, after the calls that hold it
// (or at `shutdown`).
import NIOConcurrencyHelpers
import NIOCore

/// A value made around a signed-in cluster client (the client itself, or the client with the
/// producers a service keeps beside it), per account.
public final class AccountPool<Value: Sendable>: Sendable {
    /// The secret an unknown account's proof is compared with, so that it takes as long as a
    /// known account's wrong secret.
    public static var nobody: [UInt8] { accountPoolNobody }
    let endpoints: [String]
    /// Name servers: when given, each client routes across the broker groups behind them.
    let nameservers: [String]
    let options: TernCluster.Options
    let loops: any EventLoopGroup
    let limit: Int
    let retireAfter: Duration
    let make: @Sendable (TernCluster, String) -> Value
    let clusterOf: @Sendable (Value) -> TernCluster
    private let values = NIOLockedValueBox<(base: Value?, byAccount: [String: (secret: [UInt8], value: Value)])>((nil, [:]))
    /// Clients replaced or evicted, shut down after `retireAfter` (or at `shutdown`).
    private let retiring = NIOLockedValueBox<[TernCluster]>([])

    /// `make` builds the value around a new client for an access key ("" for the options' own
    /// credentials); `clusterOf` finds the client in a value again. With `nameservers`, the
    /// clients reach every broker group behind them (`endpoints` is then unused).
    public init(
        endpoints: [String], nameservers: [String] = [], options: TernCluster.Options, loops: any EventLoopGroup, limit: Int = 64,
        retireAfter: Duration = .seconds(60), make: @escaping @Sendable (TernCluster, String) -> Value,
        clusterOf: @escaping @Sendable (Value) -> TernCluster
    ) {
        self.endpoints = endpoints
        self.nameservers = nameservers
        self.options = options
        self.loops = loops
        self.limit = limit
        self.retireAfter = retireAfter
        self.make = make
        self.clusterOf = clusterOf
    }

    /// The value for `credentials` (nil: the one with the options' own credentials); throws
    /// when a client of the group cannot be made.
    public func value(for credentials: Credentials?) throws -> Value {
        let known = values.withLockedValue { all -> Value? in
            guard let credentials else { return all.base }
            return all.byAccount[credentials.accessKey].flatMap { $0.secret == credentials.secret ? $0.value : nil }
        }
        if let known { return known }
        var options = self.options
        if let credentials { options.credentials = credentials }
        let client =
            nameservers.isEmpty
            ? try TernCluster(endpoints: endpoints, options: options, eventLoopGroup: loops)
            : try TernCluster(nameservers: nameservers, options: options, eventLoopGroup: loops)
        let made = make(client, credentials?.accessKey ?? "")
        var retired: [TernCluster] = []
        let chosen = values.withLockedValue { all -> Value in
            // Another call of the same account may have made one meanwhile: keep that one.
            guard let credentials else {
                if let base = all.base {
                    retired.append(clusterOf(made))
                    return base
                }
                all.base = made
                return made
            }
            if let known = all.byAccount[credentials.accessKey], known.secret == credentials.secret {
                retired.append(clusterOf(made))
                return known.value
            }
            if let old = all.byAccount.removeValue(forKey: credentials.accessKey) { retired.append(clusterOf(old.value)) }
            if all.byAccount.count >= limit, let evict = all.byAccount.keys.min(), let old = all.byAccount.removeValue(forKey: evict) {
                retired.append(clusterOf(old.value))
            }
            all.byAccount[credentials.accessKey] = (credentials.secret, made)
            return made
        }
        for old in retired { retire(old) }
        return chosen
    }

    private func retire(_ old: TernCluster) {
        retiring.withLockedValue { $0.append(old) }
        let after = retireAfter
        Task {
            try? await Task.sleep(for: after)
            let still = self.retiring.withLockedValue { list in
                guard let k = list.firstIndex(where: { $0 === old }) else { return false }
                list.remove(at: k)
                return true
            }
            if still { await old.shutdown() }
        }
    }

    /// Shuts every client down, the retiring ones included.
    public func shutdown() async {
        let all = values.withLockedValue { all in
            defer { all = (nil, [:]) }
            return (all.base.map { [clusterOf($0)] } ?? []) + all.byAccount.values.map { clusterOf($0.value) }
        }
        let retired = retiring.withLockedValue { list in
            defer { list = [] }
            return list
        }
        for c in all + retired { await c.shutdown() }
    }
}

private let accountPoolNobody: [UInt8] = (0..<32).map { _ in UInt8.random(in: 0...255) }

/// Signed-in cluster clients, one per account (the HTTP admin API's).
public typealias AccountClusters = AccountPool<TernCluster>

extension AccountPool where Value == TernCluster {
    public convenience init(endpoints: [String], options: TernCluster.Options, loops: any EventLoopGroup) {
        self.init(endpoints: endpoints, options: options, loops: loops, make: { c, _ in c }, clusterOf: { $0 })
    }

    /// The client for `credentials` (nil: the one with the options' own credentials).
    public func cluster(for credentials: Credentials?) throws -> TernCluster { try value(for: credentials) }
}
