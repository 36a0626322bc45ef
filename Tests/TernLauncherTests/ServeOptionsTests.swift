// `tern serve`'s settings: the config file refuses what it cannot use, naming the line, and a
// flag on the command line wins over the file for every setting, the log level included.
import Foundation
import Logging
import TernLauncher
import TernServer
import Testing

@Suite("Launcher: serve options and the config file")
struct ServeOptionsTests {
    static func file(_ text: String) throws -> String {
        let path = NSTemporaryDirectory() + "tern-config-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).conf"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    static let base = "id = n1\nlisten = 127.0.0.1:9001\npeers = n1=127.0.0.1:9001\ndata = /tmp/x\n"

    func resolve(_ arguments: [String]) throws -> (ServerConfig, Logger.Level) {
        try ServeOptions.parse(arguments).resolve()
    }

    @Test(
        "values that do not parse are refused with the file's path and line",
        arguments: [
            ("tick-ms = fast", "tick-ms = fast: expected a number of milliseconds"),
            ("auto-create-topics = yes", "auto-create-topics = yes: expected true or false"),
            ("io = iouring", "io = iouring: expected auto, uring or posix"),
            ("segment-mb = 8x", "segment-mb = 8x: expected a number of MiB"),
            ("transaction-max-checks = -1", "transaction-max-checks = -1: expected a whole number"),
        ])
    func badValues(line: String, message: String) throws {
        let path = try Self.file(Self.base + "\n" + line + "\n")
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect { try resolve(["--config", path]) } throws: { "\($0)".contains("\(path):6: \(message)") }
    }

    @Test("an unknown name, a repeated name and a line without = are refused with the line")
    func badLines() throws {
        for (text, message) in [
            ("colour = blue", ":5: unknown setting colour"), ("data = /tmp/y", ":5: data is set already on line 4"),
            ("just words", ":5: expected name = value"),
        ] {
            let path = try Self.file(Self.base + text + "\n")
            defer { try? FileManager.default.removeItem(atPath: path) }
            #expect { try resolve(["--config", path]) } throws: { "\($0)".contains(path + message) }
        }
    }

    @Test("the command line wins over the file for every setting, the log level included")
    func commandLineWins() throws {
        let path = try Self.file(Self.base + "log-level = warning\ntick-ms = 20\nsegment-mb = 64\n# a comment\n\n")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let (fromFile, fileLevel) = try resolve(["--config", path])
        #expect(fileLevel == .warning && fromFile.tickMillis == 20 && fromFile.segmentBytes == 64 << 20 && fromFile.id.name == "n1")
        let (flags, flagLevel) = try resolve(["--config", path, "--log-level", "debug", "--tick-ms", "30", "--data", "/tmp/z"])
        #expect(flagLevel == .debug && flags.tickMillis == 30 && flags.dataDirectory == "/tmp/z" && flags.segmentBytes == 64 << 20)
    }

    @Test("out-of-range values and a --listen that --peers does not give are refused")
    func ranges() throws {
        #expect(throws: (any Error).self) {
            try resolve(["--id", "n1", "--listen", "127.0.0.1:9001", "--peers", "n1=127.0.0.1:9001", "--data", "d", "--tick-ms", "0"])
        }
        #expect(throws: (any Error).self) { try resolve(["--id", "n1", "--listen", "127.0.0.1:9002", "--peers", "n1=127.0.0.1:9001", "--data", "d"]) }
        #expect(throws: (any Error).self) {
            try resolve(["--id", "n1", "--listen", "127.0.0.1:9001", "--peers", "n1=127.0.0.1:9001,n1=127.0.0.1:9003", "--data", "d"])
        }
        #expect(throws: (any Error).self) {
            try resolve(["--id", "n1", "--listen", "127.0.0.1:9001", "--peers", "n1=127.0.0.1:9001", "--data", "d", "--log-level", "loud"])
        }
        // A wildcard --listen on the --peers address's port (a pod binding 0.0.0.0) is taken;
        // on another port it is not.
        let (pod, _) = try resolve(["--id", "n1", "--listen", "0.0.0.0:9001", "--peers", "n1=tern-0.tern:9001,n2=tern-1.tern:9001", "--data", "d"])
        #expect(pod.listen == "0.0.0.0:9001" && pod.peers.values.contains("tern-0.tern:9001"))
        #expect(throws: (any Error).self) { try resolve(["--id", "n1", "--listen", "0.0.0.0:9002", "--peers", "n1=tern-0.tern:9001", "--data", "d"]) }
        #expect(throws: (any Error).self) { try resolve(["--id", "n1", "--listen", "10.0.0.9:9001", "--peers", "n1=tern-0.tern:9001", "--data", "d"]) }
        // --http-listen must be host:port and not the node's other ports.
        let (http, _) = try resolve([
            "--id", "n1", "--listen", "127.0.0.1:9001", "--peers", "n1=127.0.0.1:9001", "--data", "d", "--http-listen", "127.0.0.1:8101",
        ])
        #expect(http.httpListen == "127.0.0.1:8101")
        #expect(throws: (any Error).self) {
            try resolve(["--id", "n1", "--listen", "127.0.0.1:9001", "--peers", "n1=127.0.0.1:9001", "--data", "d", "--http-listen", "127.0.0.1:9001"])
        }
        #expect(throws: (any Error).self) {
            try resolve(["--id", "n1", "--listen", "127.0.0.1:9001", "--peers", "n1=127.0.0.1:9001", "--data", "d", "--http-listen", "8101"])
        }
    }

    @Test("quantiles come from HdrHistogram at three significant digits")
    func quantiles() {
        let q = Quantiles((1...1000).map(Double.init), unit: 1)
        #expect(q.count == 1000)
        #expect(abs(q.value(at: 0.5) - 500) <= 1 && abs(q.value(at: 0.99) - 990) <= 1 && q.max == 1000)
        #expect(Quantiles([], unit: 1).value(at: 0.5) == 0)
        let seconds = Quantiles([0.25, 0.5, 1.5], unit: 1e-3)
        #expect(abs(seconds.value(at: 1) - 1.5) < 0.002)
    }
}
