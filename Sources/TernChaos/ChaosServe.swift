// `tern-chaos serve`: one node for chaos and failover tests. It is `tern serve` with the test
// hooks that the production command cannot reach: peers dialled through relays, a storage fault
// file, and planted bugs. It lives in the test-only `tern-chaos` executable; the `tern` binary
// that users run has none of this.
import ArgumentParser
import TernLauncher
import TernRaft
@_spi(Testing) import TernServer

public struct ChaosServe: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "A node for chaos tests: tern serve plus relays, disk faults and planted bugs (never for production).")

    @OptionGroup var options: ServeOptions
    @Option(help: "Dial these peers elsewhere than their endpoint, as ID=host:port or HOST:PORT=host:port (relays).") var dial: String?
    @Option(help: "A control file that can make this node's disk slow (\"slow MS\") or full (\"full\").") var faultFile: String?
    @Option(help: "A deliberate bug to plant (see PlantedBugs.all), to show a checker catching it.") var plant: [String] = []
    @Option(help: "Commitlog segments of this many KiB (smaller than tern serve allows: retention stress).") var segmentKb: Int?

    public init() {}

    public func run() throws {
        var (cfg, level) = try options.resolve()
        if let dial {
            let targets = try parseMembers(dial, flag: "--dial")
            for (peer, endpoint) in targets {
                guard peer != cfg.id else { throw ValidationError("--dial: \(peer) is this node") }
                cfg.dial[peer] = endpoint
            }
        }
        cfg.faultFile = faultFile
        if let kb = segmentKb {
            guard kb >= 64 && kb % 4 == 0 else { throw ValidationError("--segment-kb must be a multiple of 4, at least 64 (got \(kb))") }
            cfg.segmentBytes = kb << 10
        }
        for name in plant {
            guard let bug = PlantedBugs.all.first(where: { $0.0 == name })?.1 else { throw ValidationError("--plant \(name) is unknown") }
            cfg.plantedBugs.insert(bug)
        }
        try runServer(cfg, level: level)
    }
}
