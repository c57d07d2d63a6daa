import { describe, expect, it } from "vitest";

const subject = %%subject%%;

describe(subject.name, () => {
  it("is described", () => {
    expect(subject.description.length).toBeGreaterThan(0);
  });
});
