// The one place the production parser is wired into the prober (tests inject their own).
extension Prober {
    /// A prober using the built-in vendor output parsers.
    public convenience init(settings: ProbeSettings = ProbeSettings(), runner: ToolRunner = .shared) {
        self.init(settings: settings, runner: runner, parse: { text, tool in try VendorOutputParser.parse(text, as: tool) })
    }
}
