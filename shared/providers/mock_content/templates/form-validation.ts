export interface FieldSpec {
  name: string;
  label: string;
  type: "text" | "email" | "password" | "textarea";
  autocomplete: string;
  required: boolean;
}

export type FormValues = Record<string, string>;
export type FormErrors = Record<string, string>;

export const fields: FieldSpec[] = %%fields%%;

const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

export function emptyValues(): FormValues {
  return Object.fromEntries(fields.map((field) => [field.name, ""]));
}

function checkField(field: FieldSpec, value: string): string | null {
  if (field.required && !value) return `${field.label} is required`;
  if (field.type === "email" && value && !EMAIL.test(value)) return "Enter a valid email address";
  if (field.type === "password" && value && value.length < 8) return "Use at least 8 characters";
  return null;
}

export function validate(values: FormValues): FormErrors {
  const errors: FormErrors = {};
  for (const field of fields) {
    const problem = checkField(field, (values[field.name] ?? "").trim());
    if (problem) errors[field.name] = problem;
  }
  return errors;
}
