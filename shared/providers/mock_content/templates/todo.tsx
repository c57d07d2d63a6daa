import { useState, type FormEvent } from "react";
import { addTodo, initialTodos, remaining, removeTodo, toggleTodo } from "../lib/todos";

const heading = %%heading%%;

export default function TodoList() {
  const [todos, setTodos] = useState(initialTodos);
  const [draft, setDraft] = useState("");

  function handleAdd(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    setTodos((current) => addTodo(current, draft));
    setDraft("");
  }

  return (
    <section className="todo-card">
      <h2>{heading}</h2>
      <form className="todo-form" onSubmit={handleAdd}>
        <input
          aria-label="New task"
          placeholder="What needs doing?"
          value={draft}
          onChange={(event) => setDraft(event.target.value)}
        />
        <button className="button primary" type="submit">
          Add
        </button>
      </form>
      <ul className="todo-list">
        {todos.map((todo) => (
          <li key={todo.id} className={todo.done ? "todo done" : "todo"}>
            <label>
              <input
                type="checkbox"
                checked={todo.done}
                onChange={() => setTodos((current) => toggleTodo(current, todo.id))}
              />{" "}
              {todo.text}
            </label>
            <button
              type="button"
              className="link"
              aria-label={"Remove " + todo.text}
              onClick={() => setTodos((current) => removeTodo(current, todo.id))}
            >
              Remove
            </button>
          </li>
        ))}
      </ul>
      <p className="todo-count">{remaining(todos)} left</p>
    </section>
  );
}
