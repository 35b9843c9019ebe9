import Foundation
import GridCore

/// `nvidia-smi topo -m`: the GPU-to-GPU matrix. A cell `NV<n>` means a direct connection over n
/// bonded NVLinks; `SYS`, `NODE`, `PHB`, `PXB`, `PIX` are PCIe paths; `X` is the GPU itself. The
/// `NUMA Affinity` column gives each GPU's NUMA node (`N/A` when the host has none). Rows and
/// columns of NICs (`mlx5_0`) and the legend are skipped. The result carries no devices, only
/// `links` by GPU index, which the inventory merger adds to the devices of the other NVIDIA
/// tools.
public enum NvidiaTopologyParser {
    public static func parse(_ text: String) throws -> VendorParseResult {
        var result = VendorParseResult(tool: .nvidiaSMITopo)
        var header: [String]?
        for raw in ParseSupport.lines(text) {
            let cells = raw.split(separator: "\t", omittingEmptySubsequences: false).map { $0.trimmingSpaces() }
            guard let first = cells.first else { continue }
            if header == nil {
                // The header row: an empty first cell, then GPU0, GPU1, …
                if first.isEmpty, cells.count > 1, cells[1].hasPrefix("GPU") { header = cells }
                continue
            }
            guard let cols = header, let row = gpuIndex(first) else {
                if first.hasPrefix("Legend") { break }
                continue
            }
            var links = DeviceLinks()
            for (c, name) in cols.enumerated() where c > 0 && c < cells.count {
                let cell = cells[c]
                if let peer = gpuIndex(name), peer != row, cell.hasPrefix("NV"), Int(cell.dropFirst(2)) != nil {
                    links.nvlinkPeers.append(peer)
                } else if name == "NUMA Affinity" {
                    links.numaNode = Int(cell.split(separator: ",").first.map(String.init) ?? "")
                }
            }
            links.nvlinkPeers.sort()
            result.links[row] = links
        }
        guard header != nil else {
            throw VendorParseError.malformed(tool: .nvidiaSMITopo, detail: "no header row of GPU columns (GPU0, GPU1, …)")
        }
        return result
    }

    /// 3 for "GPU3"; nil for anything else.
    static func gpuIndex(_ name: String) -> Int? {
        guard name.hasPrefix("GPU"), let n = Int(name.dropFirst(3)), n >= 0, n < 1024 else { return nil }
        return n
    }
}
