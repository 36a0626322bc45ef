// Placeholder: SwiftPM needs a target; the plugins come from the dependencies.
