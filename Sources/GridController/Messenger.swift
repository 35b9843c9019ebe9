import Foundation
import GridProtocol
import GridTransport
import Logging

/// Envelope plumbing every controller shares: numbering outbound messages, decoding inbound
/// ones, and counting (never crashing on) what cannot be decoded.
struct Messenger {
    let sender: String
    let codec: EnvelopeCodec
    let logger: Logger
    private(set) var sequence: UInt64 = 0
    /// Rejected inbound frames by reason label (ProtocolError.counterLabel, "bad_shape").
    private(set) var rejected: [String: Int] = [:]

    init(sender: String, maxFrameBytes: Int, logger: Logger) {
        self.sender = sender
        self.codec = EnvelopeCodec(maxFrameBytes: maxFrameBytes)
        self.logger = logger
    }

    mutating func output(_ body: Body, to peer: Peer, replyTo: UInt64 = 0, delimited: Bool = false) -> LoopOutput {
        sequence &+= 1
        let frame = codec.encode(Message(sender: sender, sequence: sequence, replyTo: replyTo, body: body))
        return LoopOutput(to: peer, payload: frame, delimited: delimited)
    }

    /// Decodes a frame, or logs and counts why not. A frame whose envelope is readable gets an
    /// ERROR_REPLY (in `reply`) saying what is wrong and where, so the sender need not time out:
    /// `unsupported` for a protocol version this build does not speak, `bad_request` for a payload
    /// that does not decode or a field that breaks a rule. An unreadable envelope, or an error
    /// reply that is itself bad, gets nothing (there is no one to answer, or it could loop).
    /// Per reason: when the last "rejected frame" line was logged and how many were not since.
    private var lastLogged: [String: (atMs: Int64, suppressed: Int)] = [:]

    mutating func decode(_ payload: [UInt8], from peer: Peer, delimited: Bool, nowMs: Int64 = 0, reply: inout [LoopOutput]) -> Message? {
        do {
            return try codec.decode(payload)
        } catch {
            let label = error.counterLabel
            rejected[label, default: 0] += 1
            // At most one line per reason per second: a flood of junk must not flood the log.
            if let last = lastLogged[label], nowMs - last.atMs < 1000 {
                lastLogged[label]!.suppressed += 1
            } else {
                logger.warning("rejected frame", metadata: [
                    "from": "\(peer.label)", "reason": "\(error)", "bytes": "\(payload.count)",
                    "rejected_total": "\(rejected.values.reduce(0, +))",
                    "not_logged_since_last": "\(lastLogged[label]?.suppressed ?? 0)",
                ])
                lastLogged[label] = (nowMs, 0)
            }
            if payload.count <= codec.maxFrameBytes, let env = try? Wire.Envelope(serializedBytes: payload), env.version != 0,
               env.type != .errorReply {
                var e = Wire.ErrorReply()
                switch error {
                case .unsupportedVersion: e.code = "unsupported"
                default: e.code = "bad_request"
                }
                e.message = "\(error)"
                reply.append(output(.errorReply(e), to: peer, replyTo: env.sequence, delimited: delimited))
            }
            return nil
        }
    }

    mutating func countBadShape(from peer: Peer, frames: Int) {
        rejected["bad_shape", default: 0] += 1
        logger.warning("rejected message with \(frames) frames; expected [identity, payload]", metadata: ["from": "\(peer.label)"])
    }
}
