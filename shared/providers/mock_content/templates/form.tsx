import { useState, type FormEvent } from "react";
import { emptyValues, fields, validate, type FormErrors } from "../lib/validation";

const heading = %%heading%%;
const submitLabel = %%submit%%;

export default function %%name%%() {
  const [values, setValues] = useState(emptyValues);
  const [errors, setErrors] = useState<FormErrors>({});
  const [submitted, setSubmitted] = useState(false);

  function update(name: string, value: string) {
    setValues((current) => ({ ...current, [name]: value }));
  }

  function handleSubmit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const found = validate(values);
    setErrors(found);
    setSubmitted(Object.keys(found).length === 0);
  }

  if (submitted) {
    return (
      <p className="form-success" role="status">
        Thanks, you are all set.
      </p>
    );
  }

  return (
    <form className="form-card" noValidate onSubmit={handleSubmit}>
      <h2>{heading}</h2>
      {fields.map((field) => (
        <div className="form-field" key={field.name}>
          <label htmlFor={field.name}>{field.label}</label>
          {field.type === "textarea" ? (
            <textarea
              id={field.name}
              rows={4}
              value={values[field.name]}
              onChange={(event) => update(field.name, event.target.value)}
            />
          ) : (
            <input
              id={field.name}
              type={field.type}
              autoComplete={field.autocomplete}
              value={values[field.name]}
              onChange={(event) => update(field.name, event.target.value)}
            />
          )}
          {errors[field.name] && <p className="field-error">{errors[field.name]}</p>}
        </div>
      ))}
      <button className="button primary" type="submit">
        {submitLabel}
      </button>
    </form>
  );
}
