// Client TLS on real processes (docs/security.md): nodes started with --tls-cert serve clients
// over TLS while their peers keep the authenticated plain link; each way a client can get TLS
// wrong is refused with words that say which; a renewed certificate reaches new connections
// without a restart. The certificates are made with the openssl command.
import Foundation
import TernClient
import TernLauncher
import TernProtocol
import Testing

/// A private CA, a node certificate for 127.0.0.1 signed by it, and an unrelated CA with a
/// certificate of its own for 127.0.0.1.
struct TestPKI {
    let dir: String
    var ca: String { dir + "/ca.pem" }
    var nodeCert: String { dir + "/node.pem" }
    var nodeKey: String { dir + "/node.key" }
    var otherCA: String { dir + "/other-ca.pem" }
    var otherCert: String { dir + "/other.pem" }
    var otherKey: String { dir + "/other.key" }
    /// Signed by the CA, for elsewhere.example only.
    var wrongNameCert: String { dir + "/wrong.pem" }
    var wrongNameKey: String { dir + "/wrong.key" }

    init() throws {
        dir = NSTemporaryDirectory() + "tern-pki-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try "subjectAltName=IP:127.0.0.1\n".write(toFile: dir + "/ext.cnf", atomically: true, encoding: .utf8)
        try "subjectAltName=DNS:elsewhere.example\n".write(toFile: dir + "/wrong.cnf", atomically: true, encoding: .utf8)
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        for (name, signed) in [("ca", "node"), ("other-ca", "other")] {
            try TestPKI.openssl(
                ["req", "-x509"] + ec + ["-keyout", "\(dir)/\(name).key", "-out", "\(dir)/\(name).pem", "-days", "30", "-subj", "/CN=tern test \(name)"])
            try TestPKI.openssl(["req"] + ec + ["-keyout", "\(dir)/\(signed).key", "-out", "\(dir)/\(signed).csr", "-subj", "/CN=tern node"])
            try TestPKI.openssl([
                "x509", "-req", "-in", "\(dir)/\(signed).csr", "-CA", "\(dir)/\(name).pem", "-CAkey", "\(dir)/\(name).key", "-CAcreateserial",
                "-out", "\(dir)/\(signed).pem", "-days", "30", "-extfile", "\(dir)/ext.cnf",
            ])
        }
        try TestPKI.openssl(["req"] + ec + ["-keyout", "\(dir)/wrong.key", "-out", "\(dir)/wrong.csr", "-subj", "/CN=elsewhere"])
        try TestPKI.openssl([
            "x509", "-req", "-in", "\(dir)/wrong.csr", "-CA", "\(dir)/ca.pem", "-CAkey", "\(dir)/ca.key", "-CAcreateserial",
            "-out", "\(dir)/wrong.pem", "-days", "30", "-extfile", "\(dir)/wrong.cnf",
        ])
    }

    static func openssl(_ args: [String]) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["openssl"] + args
        p.standardOutput = FileHandle.nullDevice
        let err = Pipe()
        p.standardError = err
        try p.run()
        p.waitUntilExit()
        let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        guard p.terminationStatus == 0 else {
            throw ClientError.invalidArgument("openssl \(args.joined(separator: " ")) failed (is openssl installed?): \(text)")
        }
    }

    func remove() { try? FileManager.default.removeItem(atPath: dir) }
}

/// Runs the tern command; its exit status and its standard output and error together.
func runTern(_ binary: String, _ args: [String]) throws -> (status: Int32, output: String) {
    try runCommand(binary, args)
}

func runCommand(_ path: String, _ args: [String]) throws -> (status: Int32, output: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = args
    let out = Pipe()
    p.standardOutput = out
    p.standardError = out
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}

@Suite("Integration: client TLS", .serialized)
struct ClientTLSTests {
    @Test(
        "a TLS group serves clients that trust its CA, across a leader kill; plain clients, untrusted CAs and a renewed certificate are each told apart",
        .timeLimit(.minutes(4)))
    func tlsClients() async throws {
        guard let binary = ternBinary() else {
            Issue.record("the tern executable was not found next to the tests")
            return
        }
        let pki = try TestPKI()
        defer { pki.remove() }
        // The node serves copies, so the test can renew them in place.
        let served = (cert: pki.dir + "/served.pem", key: pki.dir + "/served.key")
        try FileManager.default.copyItem(atPath: pki.nodeCert, toPath: served.cert)
        try FileManager.default.copyItem(atPath: pki.nodeKey, toPath: served.key)
        let cluster = try TestCluster(binary: binary, extraArgs: ["--tls-cert", served.cert, "--tls-key", served.key])
        for id in cluster.ids { try cluster.start(id) }
        defer {
            cluster.stop()
            cluster.removeData()
        }
        func options(_ tls: ClientTLS?) -> TernCluster.Options {
            var o = TernCluster.Options()
            o.tls = tls
            o.requestTimeoutMillis = 3000
            return o
        }
        let client = try TernCluster(endpoints: cluster.endpoints, options: options(ClientTLS(caFile: pki.ca)))
        defer { Task { await client.shutdown() } }
        let first = try await leader(of: client)
        try await client.createTopic("tls", queues: 2)
        let producer = Producer(cluster: client, group: "tls-producer")
        for k in 0..<20 { _ = try await producer.send(TernClient.Message(topic: "tls", body: Array("m\(k)".utf8))) }
        // A new leader is reached over TLS too (and the peers, plain and sealed, elected it).
        cluster.kill(first)
        _ = try await producer.send(TernClient.Message(topic: "tls", body: Array("after the kill".utf8)))
        let second = try await leader(of: client)
        #expect(second != first)
        try cluster.start(first)

        // Each mistake, in its own words.
        func failure(_ tls: ClientTLS?, endpoints: [String]? = nil) async -> ClientError? {
            guard let c = try? TernCluster(endpoints: endpoints ?? cluster.endpoints, options: options(tls)) else { return nil }
            defer { Task { await c.shutdown() } }
            do {
                _ = try await c.status()
                return nil
            } catch {
                return error as? ClientError
            }
        }
        let plain = await failure(nil)
        #expect(plain?.code == .unauthenticated && "\(plain!)".contains("serves clients over TLS only"), "plain client: \(String(describing: plain))")
        let systemCAs = await failure(ClientTLS())
        #expect(systemCAs.map { "\($0)".contains("did not verify") && "\($0)".contains("--tls-ca") } == true, "system CAs: \(String(describing: systemCAs))")
        let otherCA = await failure(ClientTLS(caFile: pki.otherCA))
        #expect(otherCA.map { "\($0)".contains("not signed by the CA in --tls-ca") } == true, "other CA: \(String(describing: otherCA))")

        // The CLI: --tls-ca works; without TLS it says why and exits 1; a missing CA file is named.
        let joined = cluster.endpoints.joined(separator: ",")
        let ok = try runTern(binary, ["admin", "cluster", "status", "--endpoints", joined, "--tls-ca", pki.ca])
        #expect(ok.status == 0 && ok.output.contains("leader"), "status over TLS: \(ok.output)")
        let refused = try runTern(binary, ["admin", "cluster", "status", "--endpoints", joined])
        #expect(refused.status == 1 && refused.output.contains("--tls"), "status without TLS: \(refused.output)")
        let missing = try runTern(binary, ["admin", "cluster", "status", "--endpoints", joined, "--tls-ca", pki.dir + "/nope.pem"])
        #expect(missing.status != 0 && missing.output.contains("nope.pem: no such file"), "missing CA: \(missing.output)")

        // Renewal: the node serves a certificate from the other CA to new connections, no restart.
        try FileManager.default.removeItem(atPath: served.cert)
        try FileManager.default.removeItem(atPath: served.key)
        try FileManager.default.copyItem(atPath: pki.otherCert, toPath: served.cert)
        try FileManager.default.copyItem(atPath: pki.otherKey, toPath: served.key)
        let renewed = try TernCluster(endpoints: cluster.endpoints, options: options(ClientTLS(caFile: pki.otherCA)))
        defer { Task { await renewed.shutdown() } }
        #expect(try await renewed.status().count == 3, "the renewed certificate is served")
        let old = await failure(ClientTLS(caFile: pki.ca))
        #expect(old.map { "\($0)".contains("did not verify") } == true, "the old CA no longer verifies: \(String(describing: old))")
        let log = (try? String(contentsOfFile: "\(cluster.root)/\(cluster.ids[0]).log", encoding: .utf8)) ?? ""
        #expect(log.contains("TLS for clients: reloaded"), "the node logs the reload")
    }

    @Test(
        "a key that does not go with the certificate stops the node at start; a certificate for another name, and a node without TLS, are each named to a TLS client"
    )
    func refusedSetups() async throws {
        guard let binary = ternBinary() else {
            Issue.record("the tern executable was not found next to the tests")
            return
        }
        let pki = try TestPKI()
        defer { pki.remove() }
        let port = freeLoopbackPort()
        let start = try runTern(
            binary,
            [
                "serve", "--id", "n1", "--listen", "127.0.0.1:\(port)", "--peers", "n1=127.0.0.1:\(port)", "--data", pki.dir + "/data",
                "--tls-cert", pki.nodeCert, "--tls-key", pki.otherKey,
            ])
        #expect(start.status == 2 && start.output.contains("does not go with the certificate"), "mismatched key: \(start.output)")
        let half = try runTern(
            binary,
            [
                "serve", "--id", "n1", "--listen", "127.0.0.1:\(port)", "--peers", "n1=127.0.0.1:\(port)", "--data", pki.dir + "/data", "--tls-cert",
                pki.nodeCert,
            ])
        #expect(half.status != 0 && half.output.contains("--tls-cert and --tls-key go together"), "cert alone: \(half.output)")

        for (args, expected) in [
            ([String](), "serves clients without TLS"), (["--tls-cert", pki.wrongNameCert, "--tls-key", pki.wrongNameKey], "does not name the host"),
        ] {
            let node = try TestCluster(binary: binary, extraArgs: args, nodes: 1)
            try node.start(node.ids[0])
            defer {
                node.stop()
                node.removeData()
            }
            var o = TernCluster.Options()
            o.tls = ClientTLS(caFile: pki.ca)
            o.requestTimeoutMillis = 1500
            let client = try TernCluster(endpoints: node.endpoints, options: o)
            defer { Task { await client.shutdown() } }
            try await Task.sleep(for: .milliseconds(500))
            do {
                _ = try await client.status()
                Issue.record("a TLS client was answered: \(args)")
            } catch {
                #expect("\(error)".contains(expected), "\(args): \(error)")
            }
        }
    }
}
