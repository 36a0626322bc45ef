// How client commands reach a cluster: one group's nodes (--endpoints), or every broker group
// behind name servers (--nameservers, $TERN_NAMESERVERS, or the local `tern cluster up --groups`
// name servers when they answer on 127.0.0.1:9876).
import ArgumentParser
import Foundation
import TernClient
import TernLauncher
import TernProtocol

#if canImport(Glibc)
    import Glibc
#endif

struct Endpoints: ParsableArguments {
    static let defaultEndpoints = "127.0.0.1:9001,127.0.0.1:9002,127.0.0.1:9003"
    static let localNameServers = ["127.0.0.1:9876", "127.0.0.1:9877"]

    @Option(
        help: """
            Any of one group's nodes, host:port, comma separated, in any order (default: the local \
            name servers when one answers on 127.0.0.1:9876, else \(Endpoints.defaultEndpoints)).
            """)
    var endpoints: String?
    @Option(help: "Name servers, host:port, comma or semicolon separated: every broker group behind them (default: $TERN_NAMESERVERS).")
    var nameservers: String?
    @Option(help: "Through the name servers, only this broker group (commands about one group's members: status, transfer-leader, member, snapshot).")
    var brokerGroup: String?
    @Flag(help: "Connect over TLS (to nodes started with --tls-cert), trusting the system's CAs unless --tls-ca is given.")
    var tls = false
    @Option(help: "PEM file of the CA that signed the nodes' certificates (implies --tls).")
    var tlsCa: String?
    @Option(help: "Credentials file of the account to speak for (nodes started with --acl); default: $TERN_CREDENTIALS.")
    var credentials: String?

    /// The client options these flags ask for.
    func options() throws -> TernCluster.Options {
        var o = TernCluster.Options()
        if tls || tlsCa != nil { o.tls = ClientTLS(caFile: tlsCa) }
        if let path = credentials ?? ProcessInfo.processInfo.environment["TERN_CREDENTIALS"].flatMap({ $0.isEmpty ? nil : $0 }) {
            do {
                o.credentials = try Credentials(file: path)
            } catch {
                throw ValidationError("\(error)")
            }
        }
        return o
    }

    /// The name servers to use, or nil for one group's nodes.
    func nameServerList() throws -> [String]? {
        if endpoints != nil {
            guard nameservers == nil else { throw ValidationError("--endpoints (one group) and --nameservers (every group) exclude each other") }
            guard brokerGroup == nil else { throw ValidationError("--broker-group picks a group behind the name servers; --endpoints names one already") }
            return nil
        }
        if let text = nameservers ?? ProcessInfo.processInfo.environment["TERN_NAMESERVERS"].flatMap({ $0.isEmpty ? nil : $0 }) {
            return try parseNameServers(text, flag: "--nameservers")
        }
        if Self.isNameServer(Self.localNameServers[0]) { return Self.localNameServers }
        guard brokerGroup == nil else { throw ValidationError("--broker-group needs name servers (--nameservers or $TERN_NAMESERVERS)") }
        return nil
    }

    /// The client for a command about topics and messages (every group behind the name servers).
    func cluster() throws -> TernCluster {
        if brokerGroup != nil {
            throw ValidationError(
                "--broker-group is for commands about one group (cluster status, member, transfer-leader, snapshot); messages go to every group")
        }
        return try makeCluster()
    }

    func makeCluster() throws -> TernCluster {
        let o = try options()
        do {
            if let ns = try nameServerList() { return try TernCluster(nameservers: ns, options: o) }
            return try TernCluster(endpoints: [endpoints ?? Self.defaultEndpoints], options: o)
        } catch let e as ClientError {
            if case .invalidArgument(let why) = e, why.hasPrefix("--tls") { throw ValidationError(why) }
            throw ValidationError("\(endpoints == nil ? "--nameservers" : "--endpoints"): \(e)")
        }
    }

    /// Whether a Tern name server answers at a loopback `endpoint`: it takes a group-list request
    /// and answers with a group list within half a second (a refused connect returns at once;
    /// something else on the port, RocketMQ's own name server say, does not pass).
    static func isNameServer(_ endpoint: String) -> Bool {
        guard let colon = endpoint.lastIndex(of: ":"), let port = UInt16(endpoint[endpoint.index(after: colon)...]) else { return false }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr.s_addr = inet_addr(String(endpoint[..<colon]))
        let connected = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        guard connected else { return false }
        var timeout = timeval(tv_sec: 0, tv_usec: 500_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let codec = FrameCodec()
        let request = codec.encode(Frame(opcode: Opcode.listBrokerGroups.rawValue, requestID: 1, body: Empty().encoded()))
        guard request.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) == request.count else { return false }
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while received.count < 1 << 20 {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { return false }
            received += buffer[0..<n]
            switch received.withUnsafeBytes({ codec.decode($0) }) {
            case .failure: return false
            case .success(.needMore): continue
            case .success(.frame(let frame, _)):
                return frame.flags == .response && frame.requestID == 1 && (try? BrokerGroupList.decode(frame.body)) != nil
            }
        }
        return false
    }
}

/// Runs `body` against the cluster (or, with --broker-group, that group of it) and turns client
/// errors into a message and exit status 1.
func withCluster<T>(_ e: Endpoints, _ body: (TernCluster) async throws -> T) async throws -> T {
    let cluster = try e.makeCluster()
    do {
        var target = cluster
        if let name = e.brokerGroup { target = try await cluster.brokerGroup(name) }
        let v = try await body(target)
        await cluster.shutdown()
        return v
    } catch let error as ClientError {
        await cluster.shutdown()
        FileHandle.standardError.write(Data("tern: \(error)\n".utf8))
        throw ExitCode(1)
    } catch {
        await cluster.shutdown()
        throw error
    }
}
