import Crypto
import Foundation
import SwiftProtobuf

/// Signs assignments with a region's Ed25519 key (docs/security.md, "Signed assignments").
public struct AssignmentSigner: Sendable {
    let key: Curve25519.Signing.PrivateKey
    /// How long a signed assignment may be started after it was sent.
    public let validityMs: UInt64

    /// `seed`: the 32-byte secret of the key (as `gridctl keys generate` writes it).
    public init(seed: [UInt8], validityMs: UInt64 = 120_000) throws {
        key = try Curve25519.Signing.PrivateKey(rawRepresentation: seed)
        self.validityMs = validityMs
    }

    public var publicKey: [UInt8] { Array(key.publicKey.rawRepresentation) }

    /// `a` with an expiry `validityMs` after `nowMs` and its signature.
    public func signed(_ a: Wire.Assignment, nowMs: UInt64) throws -> Wire.Assignment {
        var out = a
        out.expiresAtMs = nowMs &+ validityMs
        out.signature = Data()
        out.signature = try key.signature(for: Self.canonical(out))
        return out
    }

    /// The bytes signed: the message with `signature` empty, fields and map entries in a fixed order.
    static func canonical(_ a: Wire.Assignment) throws -> Data {
        var unsigned = a
        unsigned.signature = Data()
        var options = BinaryEncodingOptions()
        options.useDeterministicOrdering = true
        return try unsigned.serializedData(options: options)
    }
}

/// Checks assignments against the region's Ed25519 public key.
public struct AssignmentVerifier: Sendable {
    let key: Curve25519.Signing.PublicKey

    public init(publicKey: [UInt8]) throws {
        key = try Curve25519.Signing.PublicKey(rawRepresentation: publicKey)
    }

    /// Nil when `a` is signed by the region's key and not expired at `nowMs`; else why not.
    public func problem(with a: Wire.Assignment, nowMs: UInt64) -> String? {
        guard !a.signature.isEmpty else { return "unsigned (this agent runs only assignments its region signed)" }
        guard a.signature.count == 64 else { return "signature of \(a.signature.count) bytes (want 64)" }
        guard let bytes = try? AssignmentSigner.canonical(a), key.isValidSignature(a.signature, for: bytes) else {
            return "signature does not verify with the region's signing key (forged or altered)"
        }
        guard a.expiresAtMs >= nowMs else {
            return "expired \(nowMs - a.expiresAtMs) ms ago (replayed, or this host's clock is ahead: keep clocks in sync)"
        }
        return nil
    }
}
