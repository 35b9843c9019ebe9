import Testing

/// Every end-to-end suite that starts real processes runs inside this one, one test at a time.
/// Their tests block while they wait for processes; run side by side on a 2-core machine they
/// would hold every thread of the cooperative pool for seconds and starve the async tests of
/// the other targets (socket loops, tool deadlines), which then miss their own deadlines.
@Suite(.serialized) enum EndToEnd {}
