// Framing for SwiftNIO pipelines, shared by the server, the client and peer links: a decoder
// that turns bytes into `Frame`s (or a `FrameError`, after which the connection is answered and
// closed) and an encoder into a `ByteBuffer`.
import NIOCore
import TernProtocol

/// Decodes frames. A bad header raises `FrameError` through the pipeline; the handler after it
/// answers with `ErrorBody.badFrameResponse` and closes.
public struct FrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = Frame
    let codec: FrameCodec

    public init(codec: FrameCodec = FrameCodec()) { self.codec = codec }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        let result = buffer.withUnsafeReadableBytes { codec.decode($0) }
        switch result {
        case .failure(let e): throw e
        case .success(.needMore): return .needMoreData
        case .success(.frame(let frame, let consumed)):
            buffer.moveReaderIndex(forwardBy: consumed)
            context.fireChannelRead(wrapInboundOut(frame))
            return .continue
        }
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        return .needMoreData
    }
}

extension ByteBuffer {
    /// Appends `frame`, encoded.
    public mutating func writeFrame(_ frame: Frame, codec: FrameCodec = FrameCodec()) {
        writeBytes(codec.header(frame))
        writeBytes(frame.body)
    }
}
